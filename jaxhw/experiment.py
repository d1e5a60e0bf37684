"""What the classification experiments share: common flags, the checkpoint-folder rules,
and one function that resumes, trains with the engine, evaluates and writes the results.

An image experiment is then a config dataclass, a model, an optimizer and a call to
:func:`train_image_classifier`; the BERT experiment prepares its own token buckets and
calls :func:`train_classifier`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxhw.config import ConfigError, flag
from jaxhw.data import (crop_and_flip, get_spec, load_split, normalize, random_crop,
                        random_erase, subset_indices)
from jaxhw.data.pipeline import alternate_flip, preflip
from jaxhw.train import (CheckpointError, Checkpoints, Data, EvalResult, Hook, Trainer,
                         TrainState, classification_loss, count_params, open_run,
                         per_class_table, write_json)
from jaxhw.train.compile_cache import CACHE_HELP, DEFAULT_DIR, enable_compile_cache
from jaxhw.train.lookahead import Lookahead
from jaxhw.train.precision import DTYPE_HELP, DTYPES, compute_dtype
from jaxhw.train.xla_options import AUTOTUNE_HELP, gpu_compiler_options, merge


CONV_HELP = ("convolution and max pooling: auto (jaxhw's CPU versions on a CPU - XLA's "
             "built-in convolutions instead of YNNPACK's, a phase-split input gradient for "
             "strided layers, pooling without select_and_scatter - and lax/cuDNN elsewhere), "
             "fast (jaxhw's on any backend) or lax (lax, flax and XLA's defaults); speed only")


@dataclasses.dataclass
class EngineConfig:
    """Flags of the training engine that every experiment has."""

    dtype: str = flag("auto", DTYPE_HELP, choices=DTYPES)
    compile_cache: str = flag(DEFAULT_DIR, CACHE_HELP)
    steps_per_call: int = flag(0, "optimizer steps per device call (a lax.scan); 0 = auto: "
                                  "the steps between two host reads of the loss (50), but 1 "
                                  "on a CPU for models with convolutions, which XLA runs "
                                  "slower inside a loop; more keeps a fast GPU busy when "
                                  "steps are short")
    gpu_autotune: int = flag(-1, AUTOTUNE_HELP)


def engine_options(cfg: EngineConfig, base: dict[str, str] | None = None
                     ) -> dict[str, str] | None:
    """``base`` (e.g. the CPU convolution's options) plus ``--gpu-autotune``'s."""
    if not -1 <= cfg.gpu_autotune <= 4:
        raise ConfigError(f"--gpu-autotune must lie in -1..4, got {cfg.gpu_autotune}")
    return merge(base, gpu_compiler_options(cfg.gpu_autotune))


def start(cfg: EngineConfig) -> Any:
    """What every experiment does first: turn the compilation cache on (or off), resolve
    ``--dtype``, and say where it runs. Returns the compute dtype."""
    if cfg.steps_per_call < 0:
        raise ConfigError(f"--steps-per-call must be 0 or more, got {cfg.steps_per_call}")
    engine_options(cfg)  # checks --gpu-autotune
    dtype = compute_dtype(cfg.dtype)
    cache = enable_compile_cache(cfg.compile_cache)
    print(f"device: {device_name()}; compute dtype {dtype.name}; compilation cache: "
          f"{cache or 'off'}")
    return dtype


def device_name() -> str:
    return f"{jax.device_count()} x {jax.devices()[0].device_kind}"


def timing_summary(trainer: Trainer, history: Sequence[dict]) -> dict:
    """``compile_s`` (XLA compilation, or loading from the compilation cache, of every
    program of ``trainer``), ``trace_s`` (tracing them) and ``train_s`` (training steps,
    both excluded) for results.json, with the device."""
    return {"compile_s": trainer.compile_s, "trace_s": trainer.trace_s,
            "train_s": sum(r["train_time_s"] for r in history),
            "device": device_name()}


def print_timing(timing: dict, dtype: str) -> None:
    print(f"compile {timing['compile_s']:.1f} s (+ {timing['trace_s']:.1f} s tracing), "
          f"training {timing['train_s']:.1f} s (both excluded) on {timing['device']}, {dtype}")


@dataclasses.dataclass
class RunConfig(EngineConfig):
    """Flags every experiment has."""

    data_dir: str | None = flag(None, "local dataset directory in the plain layout (else "
                                      "$JAXHW_DATA_DIR, else TensorFlow Datasets downloads it)")
    checkpoint_dir: str | None = flag(None, "where checkpoints, history and results go "
                                            "(default: checkpoints/<experiment>)")
    resume: bool = flag(False, "continue from the latest checkpoint in --checkpoint-dir")
    overwrite: bool = flag(False, "delete the checkpoints already in --checkpoint-dir and "
                                  "start over")
    evaluate: bool = flag(False, "do not train: restore the best checkpoint in "
                                 "--checkpoint-dir and evaluate it")
    seed: int = flag(0, "seed of every random choice (init, shuffling, augmentation, dropout)")
    train_limit: int = flag(0, "train on a random subset of this many examples (0 = all)")
    test_limit: int = flag(0, "test on a random subset of this many examples (0 = all)")
    seeds: int = flag(1, "train this many seeds (--seed, --seed + 1, ...) back to back in one "
                         "process, compiling once; each seed checkpoints to "
                         "<checkpoint-dir>/seed_<s>, and results.json lists every seed's "
                         "accuracy and times with their mean and standard deviation")


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Device-side ``(key, uint8 images, train, step) -> float images``: scale to [0, 1],
    normalise per channel, and when training apply random erasing (probability ``erase``),
    a random crop (``pad`` pixels of ``pad_mode`` padding) and flips: random ones
    (``flip``), or airbench's alternating ones (``alternate_flip``: the training images
    are mirrored for a random half once, by :func:`train_image_classifier`, then all of
    them in every odd epoch; ``steps_per_epoch`` says where epochs end and is filled in by
    :func:`train_image_classifier`)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 0
    flip: bool = False
    erase: float = 0.0
    pad_mode: str = "constant"  # or "reflect"
    alternate_flip: bool = False
    steps_per_epoch: int = 0

    def __call__(self, key: jax.Array, images: jax.Array, train: bool, step=None) -> jax.Array:
        x = normalize(images, self.mean, self.std)
        if not train:
            return x
        if self.erase > 0:  # split only here, so runs without erasing keep their keys
            key, erase_key = jax.random.split(key)
            x = random_erase(erase_key, x, self.erase)
        if self.alternate_flip:
            if step is None or self.steps_per_epoch < 1:
                raise ValueError("alternating flips need the step and steps_per_epoch")
            x = alternate_flip(random_crop(key, x, self.pad, self.pad_mode), step,
                               self.steps_per_epoch)
        elif self.pad or self.flip:
            x = crop_and_flip(key, x, self.pad, self.flip, self.pad_mode)
        return x


def _subset(x: np.ndarray, y: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = subset_indices(len(y), limit, seed)
    return (x, y) if idx is None else (x[idx], y[idx])


def run_dir(name: str, cfg: RunConfig) -> Path:
    """``--checkpoint-dir``, by default ``checkpoints/<name>``."""
    return Path(cfg.checkpoint_dir or Path("checkpoints") / name).expanduser()


def open_checkpoints(name: str, cfg: RunConfig) -> Checkpoints:
    """The run's checkpoint folder under the ``--resume`` / ``--overwrite`` / ``--evaluate``
    rules (default ``checkpoints/<name>``)."""
    out_dir = run_dir(name, cfg)
    if cfg.evaluate:
        ckpt = Checkpoints(out_dir)
        if ckpt.latest_epoch() is None:
            raise CheckpointError(f"--evaluate: no checkpoint in {ckpt.directory}; train first")
        return ckpt
    return open_run(out_dir, resume=cfg.resume, overwrite=cfg.overwrite)


def train_classifier(
        name: str, cfg: RunConfig, ckpt: Checkpoints, trainer: Trainer, state: TrainState, *,
        train: Data, test: Data, final: Data | None = None, class_names: Sequence[str],
        epochs: int, batch_size: int, hooks: Sequence[Hook] = (), eval_batch_size: int = 500,
        extra: dict | None = None, seed: int | None = None
        ) -> tuple[dict, TrainState, EvalResult]:
    """Resume (or, with ``--evaluate``, restore the best checkpoint), fit with per-epoch
    evaluation on ``test``, evaluate on ``final`` (default ``test``), and write
    ``results.json``, ``per_class_accuracy.md``, ``confusion_matrix.png`` and
    ``history.png`` next to the checkpoints.

    Every hook sees the fit loop's calls, then ``on_train_end(folder)`` and
    ``on_test(final evaluation)``, so an experiment can print the original notebook's lines.
    ``seed`` (default ``--seed``) draws the shuffles. Returns the results
    dict, the final state and the final evaluation.
    """
    seed = cfg.seed if seed is None else seed
    history: list[dict] = []
    if cfg.evaluate:
        state, history, _ = trainer.resume(ckpt, state, ckpt.best_epoch())
        print(f"evaluating {ckpt.directory}, epoch {ckpt.best_epoch()} (the best kept)")
    elif cfg.resume:
        state, history, _ = trainer.resume(ckpt, state)
        print(f"resumed from {ckpt.directory} at epoch {len(history)}")
    t0 = time.perf_counter()
    if not cfg.evaluate:
        state, history = trainer.fit(
            state, train, test, epochs=epochs, batch_size=batch_size, seed=seed,
            checkpoints=ckpt, history=history, hooks=hooks, eval_batch_size=eval_batch_size,
            meta={"config": dataclasses.asdict(cfg)})
        for hook in hooks:
            hook.on_train_end(ckpt.directory)
    wall = time.perf_counter() - t0

    result = trainer.evaluate(state, test if final is None else final, eval_batch_size)
    table = per_class_table(result.labels, result.predictions, class_names)
    primary = jax.process_index() == 0  # one writer when several hosts train together
    if primary:
        (ckpt.directory / "per_class_accuracy.md").write_text(table + "\n")
        from jaxhw.plotting import plot_confusion, plot_history  # matplotlib when needed
        plot_confusion(result.labels, result.predictions, class_names,
                       ckpt.directory / "confusion_matrix.png")
        if history:
            plot_history(history, ckpt.directory / "history.png")
    timing = timing_summary(trainer, history)
    results = {
        "experiment": name, "test_accuracy": result.accuracy, "test_loss": result.loss,
        "test_examples": len(result.labels), "epochs": len(history),
        "train_time_s": timing["train_s"], **timing, "dtype": compute_dtype(cfg.dtype).name,
        "steps_per_call": trainer.block, "wall_time_this_run_s": wall,
        "parameters": count_params(state.params), "seed": seed,
        **(extra or {}), "config": dataclasses.asdict(cfg), "history": history,
    }
    if primary:
        write_json(ckpt.directory / "results.json", results)
    ckpt.close()
    print(table)
    for hook in hooks:
        hook.on_test(result)
    print_timing(timing, results["dtype"])
    print(f"results: {ckpt.directory / 'results.json'}; plots: confusion_matrix.png, "
          f"history.png")
    return results, state, result


def seed_checkpoints(name: str, cfg: RunConfig) -> list[tuple[int, Checkpoints]]:
    """The checkpoint folder of every seed of ``--seeds``, opened (so checked against the
    ``--resume`` / ``--overwrite`` rules) before anything trains: the run's own folder for
    one seed, ``<checkpoint dir>/seed_<s>`` for each of several."""
    if cfg.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {cfg.seeds}")
    if cfg.seeds == 1:
        return [(cfg.seed, open_checkpoints(name, cfg))]
    root = run_dir(name, cfg)
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    folder = lambda s: str(root / f"seed_{s}")  # noqa: E731
    return [(s, open_checkpoints(name, dataclasses.replace(cfg, checkpoint_dir=folder(s))))
            for s in seeds]


def run_seeds(name: str, cfg: RunConfig, checkpoints: list[tuple[int, Checkpoints]],
              run_one: Callable[[int, Checkpoints], tuple[dict, TrainState]]
              ) -> tuple[dict, TrainState, Path]:
    """Train every seed of :func:`seed_checkpoints` back to back: ``run_one(seed,
    checkpoints)`` trains one and returns its results dict (with ``compile_s`` so far) and
    final state.

    With several seeds, the parent folder's ``results.json`` holds ``seeds`` (a list of
    ``{seed, accuracy, train_s, compile_s}``, ``compile_s`` being what that seed compiled:
    the later seeds reuse the first one's programs), ``mean_accuracy``, ``std_accuracy``,
    ``mean_train_s``, ``device`` and ``dtype``. Returns the last seed's results and state,
    and the folder of the results."""
    if len(checkpoints) == 1:
        seed, ckpt = checkpoints[0]
        results, state = run_one(seed, ckpt)
        return results, state, ckpt.directory
    root = checkpoints[0][1].directory.parent
    rows, compiled = [], 0.0
    for seed, ckpt in checkpoints:
        print(f"--- seed {seed} ({len(rows) + 1} of {len(checkpoints)}) ---")
        results, state = run_one(seed, ckpt)
        rows.append({"seed": seed, "accuracy": results["test_accuracy"],
                     "train_s": results["train_s"], "compile_s": results["compile_s"] - compiled})
        compiled = results["compile_s"]
    accuracies = np.array([r["accuracy"] for r in rows])
    summary = {
        "experiment": name, "seeds": rows, "mean_accuracy": float(accuracies.mean()),
        "std_accuracy": float(accuracies.std(ddof=1)),
        "mean_train_s": float(np.mean([r["train_s"] for r in rows])),
        "device": results["device"], "dtype": results["dtype"],
        "config": dataclasses.asdict(cfg)}
    if jax.process_index() == 0:
        write_json(root / "results.json", summary)
    print(f"{'seed':>6} {'accuracy':>9} {'train s':>8} {'compile s':>10}")
    for r in rows:
        print(f"{r['seed']:>6} {100 * r['accuracy']:>8.2f}% {r['train_s']:>8.2f} "
              f"{r['compile_s']:>10.2f}")
    print(f"mean test accuracy {100 * summary['mean_accuracy']:.2f}% (std "
          f"{100 * summary['std_accuracy']:.2f}) over {len(rows)} seeds, "
          f"{summary['mean_train_s']:.2f} s of training per seed on {summary['device']}; "
          f"results: {root / 'results.json'}")
    return results, state, root


def train_image_classifier(
        name: str, cfg: RunConfig, *, dataset: str, model: nn.Module,
        make_tx: Callable[[int], optax.GradientTransformation], epochs: int, batch_size: int,
        preprocess: Preprocess, label_smoothing: float = 0.0, tta: int = 0,
        hooks: Sequence[Hook] = (), eval_batch_size: int = 500,
        compiler_options: dict[str, str] | None = None,
        make_lookahead: Callable[[int], Lookahead] | None = None,
        init_from_data: Callable[[np.ndarray], Callable[[TrainState], TrainState]] | None = None
        ) -> tuple[dict, TrainState, Path]:
    """Load ``dataset`` (``--train-limit`` / ``--test-limit`` subsets), put it on the device,
    and :func:`train_classifier` ``model`` on it, once per seed (:func:`run_seeds`).

    ``make_tx(steps_per_epoch)`` builds the optimizer and ``make_lookahead(steps_per_epoch)``
    the weight averaging (schedules need the step count); ``init_from_data(train images)``
    is called once and returns what is applied to every seed's freshly initialised state
    (the whitening stem: its kernel is computed from the data once for all seeds);
    ``tta`` is the test-time augmentation level (see :class:`Trainer`);
    ``compiler_options`` go to the compiled steps. Returns the (last seed's) results dict,
    final train state and the folder the results were written to."""
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs ({epochs}) and batch size ({batch_size}) must be positive")
    train = load_split(dataset, "train", cfg.data_dir)
    test = load_split(dataset, "test", cfg.data_dir)
    train_x, train_y = _subset(train.images, train.labels, cfg.train_limit, cfg.seed)
    test_x, test_y = _subset(test.images, test.labels, cfg.test_limit, cfg.seed + 1)
    if batch_size > len(train_y):
        raise ConfigError(f"batch size {batch_size} exceeds the {len(train_y)} training images")
    checkpoints = seed_checkpoints(name, cfg)  # after every check: --overwrite deletes a run

    steps_per_epoch = len(train_y) // batch_size
    adjust = init_from_data(train_x) if init_from_data else None  # the images as loaded
    if preprocess.alternate_flip:
        preprocess = dataclasses.replace(preprocess, steps_per_epoch=steps_per_epoch)
        train_x = preflip(cfg.seed, train_x)
    trainer = Trainer(model, make_tx(steps_per_epoch),
                      loss_fn=classification_loss(label_smoothing), preprocess=preprocess,
                      tta=tta, compiler_options=engine_options(cfg, compiler_options),
                      steps_per_call=cfg.steps_per_call,
                      lookahead=make_lookahead(steps_per_epoch) if make_lookahead else None)
    print(f"{name}: {len(train_y):,} train / {len(test_y):,} test images, {steps_per_epoch} "
          f"steps per epoch, {jax.device_count()} x {jax.devices()[0].platform}")
    train_data, test_data = trainer.put(train_x, train_y), trainer.put(test_x, test_y)

    def run_one(seed: int, ckpt: Checkpoints) -> tuple[dict, TrainState]:
        state = trainer.init_state(jax.random.key(seed), train_x[:1])
        if adjust is not None:
            state = adjust(state)
        print(f"{name}: {count_params(state.params):,} parameters, seed {seed}")
        results, state, _ = train_classifier(
            name, cfg, ckpt, trainer, state, train=train_data, test=test_data,
            class_names=get_spec(dataset).class_names, epochs=epochs, batch_size=batch_size,
            hooks=hooks, eval_batch_size=eval_batch_size, seed=seed)
        return results, state

    return run_seeds(name, cfg, checkpoints, run_one)
