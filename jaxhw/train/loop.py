"""The :class:`Trainer`: a model's compiled train and evaluation steps over data on the
device. An epoch runs its batches in blocks of steps per device call with tqdm progress
and hooks that see every loss; an evaluation fetches its results once per split; every
program's compile time is measured apart from the steps'. ``jaxhw.experiment`` runs the
epochs, checkpoints and results files."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence, Union

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxhw.config import ConfigError
from jaxhw.data.pipeline import epoch_batches, eval_batches
from jaxhw.train import parallel
from jaxhw.train.divergence import ON_NAN, Diverged
from jaxhw.train.lookahead import Lookahead
from jaxhw.train.loss_scale import LossScale
from jaxhw.train.state import TrainState, create_train_state
from jaxhw.train.steps import (LossFn, Preprocess, classification_loss, identity_preprocess,
                               make_eval_step, make_train_steps)


Data = Union[dict, list]  # one on-device dataset {"x", "y"}, or a list of buckets of them


def _buckets(data: Data) -> list[dict]:
    return list(data) if isinstance(data, (list, tuple)) else [data]


FULL_BLOCK_SHARE = 0.9  # with buckets, auto blocks are short enough for this share of full calls


def full_block_share(counts: Sequence[int], block: int) -> float:
    """The share of an epoch's device calls that are full blocks of ``block`` steps when
    bucket ``b`` has ``counts[b]`` batches (each bucket's last, shorter run is one call)."""
    calls = sum(-(-n // block) for n in counts)
    return sum(n // block for n in counts) / max(calls, 1)


def balanced_block(batches: int, block: int) -> int:
    """The block length that cuts ``batches`` into as few calls as blocks of ``block``
    would, each as long as the others (117 batches, block 50: 3 calls of 39): the last
    call leaves fewer slots unused than there are calls."""
    calls = -(-batches // block)
    return -(-batches // calls)


def plan_calls(counts: Sequence[int], run: int, block: int, key: jax.Array | None
               ) -> list[tuple[int, int, int, int]]:
    """An epoch's device calls ``(bucket, first batch, steps, length)``: bucket ``b``'s
    batches (rows ``0 .. counts[b] - 1`` of its shuffled batch array) are run in calls of
    one length, :func:`balanced_block` of ``counts[b]`` and ``block``, each call taking
    ``steps`` <= ``length`` batches (the slots after them are masked). The batches are cut
    into runs of ``run`` consecutive batches (0: the bucket's call length), the runs of all
    buckets shuffled together with ``key`` (None: kept in order), and each run cut into
    calls."""
    runs = []
    for b, n in enumerate(counts):
        length = balanced_block(n, block)
        step = run or length
        runs += [(b, s, min(step, n - s), length) for s in range(0, n, step)]
    if key is not None and len(runs) > 1:
        runs = [runs[k] for k in np.asarray(jax.random.permutation(key, len(runs)))]
    return [(b, t, min(length, s + c - t), length) for b, s, c, length in runs
            for t in range(s, s + c, length)]


class Hook:
    """Callbacks of a run (for the original notebooks' printouts, plots, ...): the train
    losses from :meth:`Trainer.train_epoch`, the rest from ``jaxhw.experiment``."""

    def on_losses(self, epoch: int, first_step: int, losses: np.ndarray) -> None:
        """``losses[k]`` is the train loss of step ``first_step + k`` (0-based in the epoch)."""

    def on_epoch_end(self, epoch: int, record: dict[str, float], evaluation: "EvalResult") -> None:
        """Called after an epoch's evaluation and checkpoint, with that evaluation."""

    def on_train_end(self, directory: Path) -> None:
        """Called by the experiment runner once training has finished and is saved in
        ``directory``."""

    def on_test(self, result: "EvalResult") -> None:
        """Called by the experiment runner with the final evaluation."""


@dataclasses.dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    predictions: np.ndarray  # [N] predicted class per example ([N, L] per token)
    labels: np.ndarray       # the matching labels (bucketed data comes back in bucket order)


@dataclasses.dataclass
class Trainer:
    """Compiled steps for one model + optimizer + loss, on a device mesh.

    Attributes:
      model: a Linen module called as ``model(x, train=...)``.
      tx: the optax optimizer (schedules included).
      loss_fn: training loss (e.g. cross-entropy with label smoothing).
      preprocess: device-side ``(key, x, train) -> inputs`` (normalise, augment if train).
      tta: test-time augmentation at evaluation: 0 none, 1 average the logits of each
        image and its mirror, 2 also 1-pixel translations (airbench's six views), 3 every
        shift of up to 2 pixels and its mirror (50 views; ``jaxhw.data.tta_views``).
      epoch_tta: the views of the evaluation after every epoch, when it should cost less
        than the final one (None: ``tta``); on a CPU each view is a forward pass.
      mesh: devices to shard batches over (default: all devices).
      eval_loss_fn: loss reported at evaluation (default: plain cross-entropy).
      pad_label: label value that accuracy ignores (0 for token sequences; None counts all).
      compiler_options: XLA options for both compiled steps (``jax.jit``'s
        ``compiler_options``; e.g. ``jaxhw.train.xla_options.cpu_conv_options(True)``).
      steps_per_call: optimizer steps per device call (a ``lax.scan``); 0 (auto) means
        ``log_every``, the steps between two host reads of the loss, except on a CPU for
        models that declare ``convolutional = True`` (a class attribute): XLA's CPU backend
        runs convolutions inside a loop many times slower (figures in docs/engine.md), so
        those take one step per call there; with buckets, auto shortens the block until at least 90 % of an
        epoch's calls are full blocks (:func:`full_block_share`). Hooks still see every
        step's loss, and the losses equal those of one step per call.
      bucket_run: with buckets, how many batches of one bucket are taken in a row
        (:func:`plan_calls`); 0 = the block's length.
      loss_scaling: dynamic loss scaling (float16 training; the scale lives in the state).
      accumulate: micro-batches per optimizer step: a step takes ``accumulate`` batches of
        ``batch_size`` rows, differentiates them one after the other in a ``lax.scan``
        (the memory of one) and sums their float32 gradients before one update; its loss
        is the whole step's. Buckets need ``accumulate x batch_size`` rows per step.
      on_nan: ``"stop"`` raises :class:`~jaxhw.train.divergence.Diverged` at the first host
        read that sees a non-finite train loss (or at a non-finite evaluation loss), before
        that epoch is checkpointed; with loss scaling, steps the scaler skips by design
        are not counted unless the scale is at its floor. ``"continue"`` trains on.

    Every program (a train block or an eval step, per input shape) is compiled ahead of
    its first use and timed: ``compile_s`` is XLA's time so far (near 0 when the
    compilation cache has the program), ``trace_s`` the Python tracing before it,
    ``compiled`` / ``traced`` list ``(what, shape, seconds)``. Training times in the
    history exclude both.
    """

    model: nn.Module
    tx: optax.GradientTransformation
    loss_fn: LossFn = dataclasses.field(default_factory=classification_loss)
    preprocess: Preprocess = identity_preprocess
    tta: int = 0
    epoch_tta: int | None = None
    mesh: Mesh | None = None
    eval_loss_fn: LossFn = dataclasses.field(default_factory=classification_loss)
    log_every: int = 50  # steps between host reads of the loss (each read syncs the device)
    pad_label: int | None = None
    compiler_options: dict[str, str] | None = None
    steps_per_call: int = 0
    lookahead: Lookahead | None = None  # weight averaging after each step (airbench's)
    bucket_run: int = 0
    loss_scaling: bool = False
    on_nan: str = "stop"
    accumulate: int = 1

    def __post_init__(self):
        self.mesh = self.mesh or parallel.make_mesh()
        if (self.log_every < 1 or self.accumulate < 1 or self.steps_per_call < 0
                or self.bucket_run < 0):
            raise ConfigError(f"log_every ({self.log_every}) and accumulate "
                              f"({self.accumulate}) must be positive and steps_per_call "
                              f"({self.steps_per_call}) and bucket_run ({self.bucket_run}) "
                              f"not negative")
        if self.on_nan not in ON_NAN:
            raise ConfigError(f"on_nan must be one of {', '.join(ON_NAN)}, got {self.on_nan!r}")
        self.block = self.steps_per_call or None  # None: chosen at the first train_epoch
        self._blocks: dict[int, Any] = {}  # steps per call -> its jitted block
        self._eval_steps: dict[int, Any] = {}  # test-time views -> its jitted eval step
        self._executables: dict[tuple, Any] = {}
        self.compiled: list[tuple[str, str, float]] = []
        self.traced: list[tuple[str, str, float]] = []

    @property
    def compile_s(self) -> float:
        """Seconds spent in XLA compiling (or loading from the compilation cache) so far."""
        return sum(seconds for _, _, seconds in self.compiled)

    @property
    def trace_s(self) -> float:
        """Seconds spent tracing and lowering the programs to XLA so far (Python side)."""
        return sum(seconds for _, _, seconds in self.traced)

    @property
    def programs(self) -> list[dict]:
        """Every program compiled so far: its name (``train x<steps>`` or ``eval``), input
        shapes, compile and trace seconds."""
        return [{"program": name, "shapes": shape, "compile_s": c, "trace_s": t}
                for (name, shape, c), (_, _, t) in zip(self.compiled, self.traced)]

    @property
    def setup_s(self) -> float:
        """Everything before a program first runs: tracing plus compiling."""
        return self.compile_s + self.trace_s

    def _call(self, name: str, fn, state: TrainState, *args):
        """``fn(state, *args)`` through its compiled executable for the shapes of ``args``
        (the state's never change), compiling (and timing) it on first use."""
        key = (name, tuple(np.shape(a) for a in jax.tree.leaves(args)))
        executable = self._executables.get(key)
        if executable is None:
            shape = str(list(key[1]))
            t0 = time.perf_counter()
            lowered = fn.lower(state, *args)  # tracing; the compilation cache needs it too
            t1 = time.perf_counter()
            executable = lowered.compile()    # XLA, or a load from the compilation cache
            self.compiled.append((name, shape, time.perf_counter() - t1))
            self.traced.append((name, shape, t1 - t0))
            self._executables[key] = executable
        return executable(state, *args)

    def choose_block(self, counts: Sequence[int]) -> int:
        """Steps per device call for an epoch of ``counts`` batches per bucket (see
        ``steps_per_call``)."""
        if self.steps_per_call:
            return self.steps_per_call
        if jax.default_backend() == "cpu" and getattr(self.model, "convolutional", False):
            return 1
        block = self.log_every
        if len(counts) > 1:  # buckets: each bucket's last run is short; keep those rare
            while block > 1 and full_block_share(counts, block) < FULL_BLOCK_SHARE:
                block -= 1
        return block

    def block_fn(self, steps: int):
        """The jitted block of ``steps`` optimizer steps (built once per length)."""
        if steps not in self._blocks:
            self._blocks[steps] = make_train_steps(
                self.model, self.tx, self.loss_fn, self.mesh, self.preprocess,
                self.compiler_options, steps, self.lookahead, self.accumulate)
        return self._blocks[steps]

    # ------------------------------------------------------------------ setup
    def init_state(self, rng: jax.Array, example_x: Any) -> TrainState:
        """A fresh replicated state; ``example_x`` is one raw (unpreprocessed) batch."""
        x = self.preprocess(rng, example_x, False)
        args = x if isinstance(x, tuple) else (x,)
        state = create_train_state(self.model, self.tx, rng, *args)
        if self.loss_scaling:
            state = state.replace(loss_scale=LossScale.create())
        if self.lookahead is not None:
            state = self.lookahead.init(state)
        return parallel.replicate(state, self.mesh)

    def put(self, x: Any, y: np.ndarray) -> dict:
        """Place a whole dataset on every device once."""
        return parallel.replicate({"x": x, "y": np.asarray(y)}, self.mesh)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, state: TrainState, data: Data, batch_size: int, shuffle_key: jax.Array,
                    epoch: int = 1, epochs: int = 1, hooks: Sequence[Hook] = (),
                    progress: bool = True) -> tuple[TrainState, float]:
        """One pass over ``data`` in a shuffled order; returns the state and the mean loss.

        ``data`` may be a list of buckets (datasets whose inputs differ in shape, e.g. token
        sequences cut to different lengths): batches are drawn within a bucket, in runs of
        ``bucket_run`` (default: the block) batches of one bucket, the runs of all buckets
        shuffled together (:func:`plan_calls`). Each bucket shape compiles once: its calls
        share one block length, the last call's unused slots masked."""
        parallel.check_batch_size(batch_size, self.mesh)
        buckets = _buckets(data)
        rows = batch_size * self.accumulate  # per optimizer step
        # One bucket shuffles with the epoch key itself; buckets get one key each + the mix.
        keys = jax.random.split(shuffle_key, len(buckets) + 1) if len(buckets) > 1 else [shuffle_key]
        used = [b for b, d in enumerate(buckets) if len(d["y"]) >= rows]
        if not used:
            raise ConfigError(f"a step's {rows} rows (batch size {batch_size} x accumulate "
                              f"{self.accumulate}) exceed every bucket of training data")
        batches = {b: np.asarray(epoch_batches(keys[b], len(buckets[b]["y"]), rows))
                   for b in used}
        counts = [len(batches[b]) for b in used]
        if self.block is None:
            self.block = self.choose_block(counts)
        calls = [(used[i], first, count, length) for i, first, count, length in plan_calls(
            counts, self.bucket_run, self.block, keys[-1] if len(buckets) > 1 else None)]
        steps = sum(counts)
        ordered = {b: parallel.replicate(rows, self.mesh) for b, rows in batches.items()}
        pending, waiting, total, done = [], 0, 0.0, 0
        with tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch",
                  dynamic_ncols=True, leave=False, disable=not progress) as bar:
            for n, (b, position, count, length) in enumerate(calls):
                state, losses = self._call(f"train x{length}", self.block_fn(length), state,
                                           buckets[b], ordered[b], np.int32(position),
                                           np.int32(count))
                pending.append((losses, count))
                done, waiting = done + count, waiting + count
                if waiting >= self.log_every or n == len(calls) - 1:
                    host = np.concatenate([np.asarray(l)[:c] for l, c in pending])
                    if self.on_nan == "stop":
                        self._check_finite(state, host, epoch, epochs)
                    for hook in hooks:
                        hook.on_losses(epoch, done - len(host), host)
                    total += float(host.sum())
                    bar.update(len(host))
                    bar.set_postfix(loss=f"{host.mean():.3f}")
                    pending, waiting = [], 0
        return state, total / steps

    def _check_finite(self, state: TrainState, losses: np.ndarray, epoch: int,
                      epochs: int) -> None:
        """Raise :class:`Diverged` when ``losses`` (the steps up to ``state.step`` since
        the last host read) hold a non-finite value, or when a float16 loss scale at its
        floor still skips steps."""
        bad = np.flatnonzero(~np.isfinite(losses))
        scale = getattr(state, "loss_scale", None) if self.loss_scaling else None
        if scale is None:
            floor = True
        else:
            value, good = (float(v) for v in jax.device_get((scale.scale, scale.good_steps)))
            floor = value <= scale.min_scale
            if floor and not bad.size and good == 0:  # the last step was skipped at the floor
                raise Diverged("float16 training", "overflowing", int(state.step), epoch,
                               epochs, "the loss scale is at its floor of "
                               f"{scale.min_scale:g} and steps still overflow")
        if bad.size and floor:
            step = int(state.step) - len(losses) + int(bad[0]) + 1
            raise Diverged("the train loss", float(losses[bad[0]]), step, epoch, epochs)

    def _eval_step(self, tta: int):
        if tta not in self._eval_steps:
            self._eval_steps[tta] = make_eval_step(self.model, self.eval_loss_fn, self.mesh,
                                                   self.preprocess, tta, self.compiler_options)
        return self._eval_steps[tta]

    def evaluate(self, state: TrainState, data: Data, batch_size: int = 500,
                 tta: int | None = None) -> EvalResult:
        """Loss, accuracy (over labels that are not ``pad_label``) and predictions over
        every example of ``data`` (of every bucket, in bucket order), averaging ``tta``'s
        test-time views (None: the trainer's ``tta``)."""
        tta = self.tta if tta is None else tta
        name = "eval" if tta == self.tta else f"eval tta={tta}"
        step = self._eval_step(tta)
        plans, labels = [], []
        for bucket in _buckets(data):
            n = len(bucket["y"])
            # One batch size for every split (their programs are shared): batch_size, or
            # for a split smaller than that the next power of two.
            size = batch_size if n >= batch_size else 1 << max(n - 1, 0).bit_length()
            size += -size % self.mesh.size
            plans.append((bucket, *eval_batches(n, size)))
        progress = tqdm(total=sum(len(idx) for _, idx, _ in plans), desc="evaluating",
                        unit="batch", leave=False, mininterval=2.0)
        # Every batch's results stay on the device; the host reads them once, at the end.
        # The rows are gathered by an asynchronous device op outside the step, so that the
        # step's program depends on the batch's shape only and every split shares it.
        sums, masks = [], []
        for bucket, idx, mask in plans:
            idx_d, mask_d = parallel.replicate((idx, mask), self.mesh)
            for b in range(len(idx)):
                rows = jax.tree.map(lambda a: a.take(idx_d[b], axis=0), bucket)
                sums.append(self._call(name, step, state, rows, mask_d[b]))
                progress.update()
            masks.append(mask)
            labels.append(bucket["y"])
        progress.close()
        with jax.transfer_guard_device_to_host("allow"):  # the split's one fetch
            sums, labels = jax.device_get((sums, labels))
        loss_sum = count = np.float32(0.0)  # summed in float32, batch after batch
        for l, c, _ in sums:
            loss_sum, count = loss_sum + np.float32(l), count + np.float32(c)
        keep = np.concatenate([m.reshape(-1) for m in masks]) > 0
        predictions = np.concatenate([np.asarray(p) for _, _, p in sums])[keep]
        labels = np.concatenate([np.asarray(y) for y in labels])
        valid = labels != self.pad_label if self.pad_label is not None else np.ones_like(labels, bool)
        accuracy = float(np.sum((predictions == labels) & valid) / max(valid.sum(), 1))
        return EvalResult(float(loss_sum / count), accuracy, predictions, labels)
