"""Orbax checkpoints, one per epoch: the last few and the best are kept.

Each checkpoint holds the train state and a JSON ``meta`` item (epoch, history, config).
Orbax writes a step into a temporary folder and renames it when complete, so a run killed
at any moment leaves the previous checkpoints intact; :func:`open_run` refuses to
silently start over on top of a run, or to resume one that is not there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxhw.files import WriteError, os_cause, write_atomically
from jaxhw.train.state import TrainState


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or in the way; the message says what to do."""


class Checkpoints:
    """The checkpoints of one run in ``directory`` (an orbax step per epoch)."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 2,
                 best_metric: str | None = "eval_accuracy"):
        self.directory = Path(directory).expanduser().resolve()
        self.best_metric = best_metric
        policies = [pp.LatestN(n=keep_last)]
        if best_metric:
            policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric], n=1))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                best_fn=(lambda m: m[best_metric]) if best_metric else None,  # metrics on disk
                preservation_policy=pp.AnyPreservationPolicy(policies),
                enable_async_checkpointing=False,  # an epoch is on disk before the next starts
                # Leftovers of a killed save are removed below, synchronously: orbax's own
                # cleanup runs in a thread that raises a traceback at interpreter exit when
                # a run stops on an error right after opening its folder.
                cleanup_tmp_directories=False),
            item_names=("state", "meta"))
        remove_unfinished_saves(self.directory)

    def epochs(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def best_epoch(self) -> int | None:
        """The kept epoch with the highest ``best_metric`` (the latest when there is none)."""
        return (self._manager.best_step() if self.best_metric else None) or self.latest_epoch()

    def pick(self, epoch: int | str = "final") -> int:
        """A kept epoch by name: ``"final"`` (the latest: a finished run's final weights,
        the ones its results report), ``"best"`` (the highest ``best_metric`` of the
        per-epoch evaluations) or an epoch number."""
        kept = self.epochs()
        if not kept:
            raise CheckpointError(f"no checkpoint in {self.directory}; train first")
        if epoch == "final":
            return kept[-1]
        if epoch == "best":
            return self.best_epoch()
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch in kept:
            return epoch
        raise CheckpointError(f"epoch {epoch!r} is not kept in {self.directory}; choose "
                              f"'final', 'best' or one of the kept epochs {kept}")

    def save(self, epoch: int, state: TrainState, meta: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Write ``epoch``'s checkpoint; a write that fails (no space, a size limit, no
        permission) is a :class:`WriteError` naming the folder and the cause, with the
        partial save removed and the earlier checkpoints as they were."""
        try:
            with _quiet_orbax():  # its threads log a traceback per failed write
                self._manager.save(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    metrics=metrics)
                self._manager.wait_until_finished()
        except Exception as e:  # tensorstore's errors come as ValueError, OSError, ...
            remove_unfinished_saves(self.directory)
            self._manager.reload()
            kept = self.latest_epoch()
            kept = ("no earlier checkpoint is kept" if kept is None else
                    f"the checkpoint of epoch {kept} is kept")
            raise WriteError(f"could not write the checkpoint of epoch {epoch} to "
                             f"{self.directory} ({os_cause(e)}); {kept}: free space or "
                             f"choose another --checkpoint-dir, then rerun with "
                             f"--resume") from None

    def restore(self, template: TrainState | None, epoch: int | None = None
                ) -> tuple[Any, dict]:
        """Restore ``epoch`` (default: the latest) with the shapes, dtypes and shardings of
        ``template`` (a freshly initialised state); with ``template=None``, the state as it
        was saved, a plain dict of arrays (what a predictor needs, without building an
        optimizer)."""
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None or epoch not in self.epochs():
            raise CheckpointError(
                f"no checkpoint{'' if epoch is None else f' for epoch {epoch}'} in "
                f"{self.directory}; train first, or run without --resume to start fresh")
        abstract = (None if template is None
                    else jax.tree.map(ocp.utils.to_shape_dtype_struct, template))
        try:
            restored = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for truncated or foreign files
            error = CheckpointError(
                f"checkpoint {self.directory / str(epoch)} is damaged or does not match this "
                f"model ({_short(e)}); --resume continues from the epoch before it, "
                f"--overwrite starts over")
            error.cause = _short(e)
            raise error from None
        return restored["state"], restored["meta"]

    def restore_latest_good(self, template: TrainState | None
                            ) -> tuple[Any, dict, list[tuple[int, str]]]:
        """Restore the latest checkpoint that reads back whole, for ``--resume``: a damaged
        later one (a save cut off by a crash that still left its folder, a truncated
        file) is renamed ``<epoch>.damaged`` so that the run can write that epoch again.
        Returns the state, its meta and the ``(epoch, reason)`` of every one set aside."""
        skipped: list[tuple[int, str]] = []
        for epoch in reversed(self.epochs()):
            try:
                state, meta = self.restore(template, epoch)
            except CheckpointError as e:
                skipped.append((epoch, getattr(e, "cause", str(e))))
                if jax.process_index() == 0:
                    os.replace(self.directory / str(epoch),
                               self.directory / f"{epoch}.damaged")
                self._manager.reload()
                continue
            return state, meta, skipped
        raise CheckpointError(f"no checkpoint in {self.directory} reads back whole "
                              f"({'; '.join(r for _, r in skipped)[:400]}); pass --overwrite "
                              f"to start over")

    def meta(self, epoch: int | None = None) -> dict:
        """The JSON ``meta`` item of ``epoch`` (default: the latest), without the state."""
        epoch = self.latest_epoch() if epoch is None else epoch
        return self._manager.restore(epoch, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]

    def close(self) -> None:
        self._manager.close()


def _short(error: BaseException) -> str:
    """The first line of ``error``, cut to a length a one-line message can hold."""
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text[:120]}{'...' if len(text) > 120 else ''}"


@contextlib.contextmanager
def _quiet_orbax():
    """Hold back the ERROR records (with tracebacks) that orbax's writer threads log
    through absl when a write fails: the caller reports the failure once."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def remove_unfinished_saves(directory: Path) -> list[Path]:
    """Delete the temporary folders of saves that never finished (orbax writes a step into
    ``<step>.orbax-checkpoint-tmp...`` and renames it when complete). Returns them."""
    if not directory.is_dir() or jax.process_index() != 0:  # one deleter across hosts
        return []
    leftovers = [p for p in directory.iterdir()
                 if p.is_dir() and ocp.path.atomicity.TMP_DIR_SUFFIX in p.name]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def saved_epochs(directory: str | os.PathLike) -> list[int]:
    """The epochs checkpointed in ``directory`` (none when it does not exist; nothing is
    created)."""
    directory = Path(directory).expanduser()
    return sorted(ocp.utils.checkpoint_steps(directory)) if directory.is_dir() else []


def check_run(directory: str | os.PathLike, *, resume: bool, overwrite: bool,
              flag: str = "--resume") -> None:
    """The ``--resume`` / ``--overwrite`` rules, checked without changing anything:
    resuming (or ``flag``, e.g. ``--evaluate``) needs a checkpoint, and a fresh run never
    writes over an existing one."""
    if resume and overwrite:
        raise CheckpointError("--resume and --overwrite exclude each other")
    if overwrite:
        return
    epochs = saved_epochs(directory)
    where = Path(directory).expanduser().resolve()
    if resume and not epochs:
        todo = "run without --resume to start fresh" if flag == "--resume" else "train first"
        raise CheckpointError(f"{flag}: no checkpoint in {where}; {todo}")
    if not resume and epochs:
        raise CheckpointError(
            f"{where} already holds checkpoints (latest: epoch {epochs[-1]}); pass "
            f"--resume to continue that run, --overwrite to replace it, or another "
            f"--checkpoint-dir")


def open_run(directory: str | os.PathLike, *, resume: bool, overwrite: bool,
             **kwargs) -> Checkpoints:
    """Open a run's checkpoint folder under the rules of :func:`check_run`;
    ``overwrite`` deletes the folder first."""
    directory = Path(directory).expanduser()
    check_run(directory, resume=resume, overwrite=overwrite)
    if overwrite and directory.exists():
        shutil.rmtree(directory)
    return Checkpoints(directory, **kwargs)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file, even after kill -9)."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2)))
