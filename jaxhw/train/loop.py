"""The fit loop every experiment uses: epochs of device-side batches run in blocks of steps
per device call, tqdm progress, per-epoch evaluation, history, checkpoints, printout hooks,
and compile time measured apart from training time."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxhw.config import ConfigError
from jaxhw.data.pipeline import epoch_batches, eval_batches
from jaxhw.train import parallel
from jaxhw.train.checkpoint import Checkpoints, write_json
from jaxhw.train.lookahead import Lookahead
from jaxhw.train.state import TrainState, create_train_state
from jaxhw.train.steps import (LossFn, Preprocess, classification_loss, identity_preprocess,
                               make_eval_step, make_train_steps)


Data = Union[dict, list]  # one on-device dataset {"x", "y"}, or a list of buckets of them


def _buckets(data: Data) -> list[dict]:
    return list(data) if isinstance(data, (list, tuple)) else [data]


class Hook:
    """Callbacks of the fit loop (for the original notebooks' printouts, plots, ...)."""

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
        image and its mirror, 2 also 1-pixel translations (``jaxhw.data.tta_views``).
      mesh: devices to shard batches over (default: all devices).
      eval_loss_fn: loss reported at evaluation (default: plain cross-entropy).
      pad_label: label value that accuracy ignores (0 for token sequences; None counts all).
      compiler_options: XLA options for both compiled steps (``jax.jit``'s
        ``compiler_options``; e.g. ``jaxhw.train.xla_options.cpu_conv_options(True)``).
      steps_per_call: optimizer steps per device call (a ``lax.scan``); 0 (auto) means
        ``log_every``, the steps between two host reads of the loss, except on a CPU for
        models with convolutions: XLA's CPU backend runs convolutions inside a loop many
        times slower (figures in the README), so those take one step
        per call there. Hooks still see every step's loss, and the losses equal those of
        one step per call.

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
    mesh: Mesh | None = None
    eval_loss_fn: LossFn = dataclasses.field(default_factory=classification_loss)
    log_every: int = 50  # steps between host reads of the loss (each read syncs the device)
    pad_label: int | None = None
    compiler_options: dict[str, str] | None = None
    steps_per_call: int = 0
    lookahead: Lookahead | None = None  # weight averaging after each step (airbench's)

    def __post_init__(self):
        self.mesh = self.mesh or parallel.make_mesh()
        if self.log_every < 1 or self.steps_per_call < 0:
            raise ConfigError(f"log_every ({self.log_every}) must be positive and "
                              f"steps_per_call ({self.steps_per_call}) not negative")
        self.block = self.steps_per_call or None  # None: chosen at the first train_epoch
        self.train_steps = None
        self.eval_step = make_eval_step(self.model, self.eval_loss_fn, self.mesh,
                                        self.preprocess, self.tta, self.compiler_options)
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

    def _choose_block(self, state: TrainState, data: dict) -> int:
        if self.steps_per_call or jax.default_backend() != "cpu":
            return self.steps_per_call or self.log_every
        x = self.preprocess(jax.random.key(0), jax.tree.map(lambda a: a[:1], data["x"]), False)
        args = x if isinstance(x, tuple) else (x,)
        forward = jax.make_jaxpr(lambda v, *a: self.model.apply(v, *a, train=False))
        has_conv = "conv_general_dilated" in str(forward(state.variables(), *args))
        return 1 if has_conv else self.log_every

    def _build_train_steps(self, state: TrainState, data: dict) -> None:
        if self.train_steps is None:
            self.block = self._choose_block(state, data)
            self.train_steps = make_train_steps(self.model, self.tx, self.loss_fn, self.mesh,
                                                self.preprocess, self.compiler_options,
                                                self.block, self.lookahead)

    def train_memory(self, state: TrainState, data: dict, batch_size: int) -> dict[str, int]:
        """XLA's memory analysis of the compiled train block for batches of ``batch_size``
        drawn from ``data`` (one bucket), in bytes: ``arguments`` (state, dataset, batch
        indices), ``outputs``, ``aliased`` (outputs written into donated arguments),
        ``temporaries``, and ``peak`` = arguments + outputs - aliased + temporaries, what
        the device must hold while the block runs. Compiles without running anything."""
        self._build_train_steps(state, data)
        batches = np.zeros((self.block, batch_size), np.int32)
        compiled = self.train_steps.lower(state, data, parallel.replicate(batches, self.mesh),
                                          np.int32(0), np.int32(self.block)).compile()
        m = compiled.memory_analysis()
        stats = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
                 "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes}
        stats["peak"] = (stats["arguments"] + stats["outputs"] - stats["aliased"]
                         + stats["temporaries"])
        return stats

    # ------------------------------------------------------------------ setup
    def init_state(self, rng: jax.Array, example_x: Any) -> TrainState:
        """A fresh replicated state; ``example_x`` is one raw (unpreprocessed) batch."""
        x = self.preprocess(rng, example_x, False)
        args = x if isinstance(x, tuple) else (x,)
        state = create_train_state(self.model, self.tx, rng, *args)
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
        sequences cut to different lengths): batches are drawn within a bucket, and the
        batches of all buckets are shuffled together. Each bucket shape compiles once."""
        parallel.check_batch_size(batch_size, self.mesh)
        buckets = _buckets(data)
        self._build_train_steps(state, buckets[0])
        # One bucket shuffles with the epoch key itself; buckets get one key each + the mix.
        keys = jax.random.split(shuffle_key, len(buckets) + 1) if len(buckets) > 1 else [shuffle_key]
        batches = {b: np.asarray(epoch_batches(keys[b], len(d["y"]), batch_size))
                   for b, d in enumerate(buckets) if len(d["y"]) >= batch_size}
        plan = [(b, i) for b, rows in batches.items() for i in range(len(rows))]
        if not plan:
            raise ConfigError(f"batch size {batch_size} exceeds every bucket of training data")
        if len(buckets) > 1:
            order = np.asarray(jax.random.permutation(keys[-1], len(plan)))
            plan = [plan[k] for k in order]
        steps = len(plan)
        # Each bucket's batches in the order the plan takes them, so that consecutive plan
        # entries of one bucket are consecutive rows; runs of them become blocks of steps.
        taken: dict[int, list[int]] = {b: [] for b in batches}
        positions = []
        for b, i in plan:
            positions.append(len(taken[b]))
            taken[b].append(i)
        ordered = {b: parallel.replicate(batches[b][taken[b]], self.mesh) for b in batches}
        calls, start = [], 0
        while start < steps:
            b, count = plan[start][0], 1
            while count < self.block and start + count < steps and plan[start + count][0] == b:
                count += 1
            calls.append((b, positions[start], count))
            start += count
        pending, waiting, total, done = [], 0, 0.0, 0
        with tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch",
                  dynamic_ncols=True, leave=False, disable=not progress) as bar:
            for n, (b, position, count) in enumerate(calls):
                state, losses = self._call("train", self.train_steps, state, buckets[b],
                                           ordered[b], np.int32(position), np.int32(count))
                pending.append((losses, count))
                done, waiting = done + count, waiting + count
                if waiting >= self.log_every or n == len(calls) - 1:
                    host = np.concatenate([np.asarray(l)[:c] for l, c in pending])
                    for hook in hooks:
                        hook.on_losses(epoch, done - len(host), host)
                    total += float(host.sum())
                    bar.update(len(host))
                    bar.set_postfix(loss=f"{host.mean():.3f}")
                    pending, waiting = [], 0
        return state, total / steps

    def evaluate(self, state: TrainState, data: Data, batch_size: int = 500) -> EvalResult:
        """Loss, accuracy (over labels that are not ``pad_label``) and predictions over
        every example of ``data`` (of every bucket, in bucket order)."""
        loss_sum, count, preds, labels = 0.0, 0.0, [], []
        plans = []
        for bucket in _buckets(data):
            n = len(bucket["y"])
            size = min(batch_size, -(-n // self.mesh.size) * self.mesh.size)
            size += -size % self.mesh.size
            plans.append((bucket, *eval_batches(n, size)))
        progress = tqdm(total=sum(len(idx) for _, idx, _ in plans), desc="evaluating",
                        unit="batch", leave=False, mininterval=2.0)
        for bucket, idx, mask in plans:
            for b in range(len(idx)):
                l, c, p = self._call("eval", self.eval_step, state, bucket,
                                     jnp.asarray(idx[b]), jnp.asarray(mask[b]))
                loss_sum, count = loss_sum + l, count + c
                preds.append(np.asarray(p)[mask[b] > 0])
                progress.update()
            labels.append(np.asarray(bucket["y"]))
        progress.close()
        predictions, labels = np.concatenate(preds), np.concatenate(labels)
        valid = labels != self.pad_label if self.pad_label is not None else np.ones_like(labels, bool)
        accuracy = float(np.sum((predictions == labels) & valid) / max(valid.sum(), 1))
        return EvalResult(float(loss_sum / count), accuracy, predictions, labels)

    # ------------------------------------------------------------------ fit
    def fit(self, state: TrainState, train: Data, test: Data, *, epochs: int, batch_size: int,
            seed: int, checkpoints: Checkpoints | None = None, history: list | None = None,
            meta: dict | None = None, hooks: Sequence[Hook] = (), eval_batch_size: int = 500
            ) -> tuple[TrainState, list[dict]]:
        """Train from ``len(history)`` epochs done up to ``epochs``, evaluating on ``test`` and
        checkpointing after every epoch. Returns the final state and the full history."""
        history = list(history or [])
        run_key = jax.random.key(seed)
        for epoch in range(len(history) + 1, epochs + 1):
            c0, t0 = self.setup_s, time.perf_counter()
            state, train_loss = self.train_epoch(
                state, train, batch_size, jax.random.fold_in(run_key, epoch), epoch, epochs, hooks)
            c1, t1 = self.setup_s, time.perf_counter()
            result = self.evaluate(state, test, eval_batch_size)
            c2, t2 = self.setup_s, time.perf_counter()
            record = {"epoch": epoch, "step": int(state.step), "train_loss": train_loss,
                      "eval_loss": result.loss, "eval_accuracy": result.accuracy,
                      "train_time_s": (t1 - t0) - (c1 - c0), "eval_time_s": (t2 - t1) - (c2 - c1),
                      "compile_time_s": c2 - c0}
            history.append(record)
            compiled = f", compiling {c2 - c0:.1f} s" if c2 > c0 else ""
            tqdm.write(f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, "
                       f"test loss {result.loss:.4f}, test accuracy {100 * result.accuracy:.2f}% "
                       f"({record['train_time_s']:.1f} s training{compiled})")
            if checkpoints is not None:
                checkpoints.save(epoch, state, {**(meta or {}), "epoch": epoch,
                                                "history": history}, metrics=record)
                if jax.process_index() == 0:  # one writer when several hosts train together
                    write_json(Path(checkpoints.directory) / "history.json", history)
            for hook in hooks:
                hook.on_epoch_end(epoch, record, result)
        return state, history

    def resume(self, checkpoints: Checkpoints, template: TrainState, epoch: int | None = None
               ) -> tuple[TrainState, list[dict], dict]:
        """Restore a checkpoint (default: the latest): state, history so far, and its meta."""
        state, meta = checkpoints.restore(template, epoch)
        return state, list(meta.get("history", [])), meta
