"""The one runner every experiment uses: common flags, the checkpoint-folder rules, and
:func:`train_and_evaluate`, which trains a :class:`Plan` once per seed and writes the
results.

Every experiment has the same shape (``run(cfg) -> results``): check the flags, load the
data, build the model and a :class:`~jaxhw.train.Trainer` (:func:`engine_trainer`), hand
them over as a :class:`Plan` (for images, :func:`load_images` + :func:`image_plan`), and
call :func:`train_and_evaluate`. A seed's run reads top to bottom in :func:`_train_one`:
state, then per epoch ``Trainer.train_epoch`` -> ``Trainer.evaluate`` -> history line ->
checkpoint, then the final evaluation and the results files.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxhw import host
from jaxhw.config import Checked, ConfigError, flag
from jaxhw.files import (RunFileError, check_writable, optional_write, read_json,
                         write_atomically)
from jaxhw.data import get_spec, load_split, subset
from jaxhw.train import (Checkpoints, Data, Hook, Trainer, TrainState, check_run, count_params,
                         open_run, per_class_table, write_json)
from jaxhw.train.checkpoint import CheckpointError, saved_epochs
from jaxhw.train.loop import EvalResult
from jaxhw.train.divergence import (EXIT_DIVERGED, ON_NAN, Diverged, SeedsDiverged,
                                    diverged_run)
from jaxhw.train.run_lock import RunLock, check_free
from jaxhw.train.tensorboard import TensorBoard
from jaxhw.train.compile_cache import CACHE_HELP, DEFAULT_DIR, enable_compile_cache
from jaxhw.train.precision import DTYPE_HELP, DTYPES, compute_capability, compute_dtype
from jaxhw.train.xla_options import (AUTOTUNE_HELP, DETERMINISTIC_HELP, deterministic_options,
                                    gpu_compiler_options, merge)


CONV_HELP = ("convolution and max pooling: auto (jaxhw's CPU versions on a CPU - XLA's "
             "built-in convolutions instead of YNNPACK's, a phase-split input gradient for "
             "strided layers, pooling without select_and_scatter - and lax/cuDNN elsewhere), "
             "fast (jaxhw's on any backend) or lax (lax, flax and XLA's defaults); speed only")


@dataclasses.dataclass
class EngineConfig(Checked):
    """Flags of the training engine that every experiment has."""

    dtype: str = flag("auto", DTYPE_HELP, choices=DTYPES)
    compile_cache: str = flag(DEFAULT_DIR, CACHE_HELP)
    steps_per_call: int = flag(0, "optimizer steps per device call (a lax.scan); 0 = auto: "
                                  "the steps between two host reads of the loss (50), but 1 "
                                  "on a CPU for models with convolutions, which XLA runs "
                                  "slower inside a loop; more keeps a fast GPU busy when "
                                  "steps are short", ge=0)
    gpu_autotune: int = flag(-1, AUTOTUNE_HELP, ge=-1, le=4)
    deterministic: bool = flag(False, DETERMINISTIC_HELP)
    on_nan: str = flag("stop", "what a non-finite train or evaluation loss does: stop (end "
                               "the run with one line and exit status "
                               f"{EXIT_DIVERGED}, keeping the last finite epoch's checkpoint) "
                               "or continue (train on, e.g. to look at what happens)",
                       choices=ON_NAN)


def engine_options(cfg: EngineConfig, base: dict[str, str] | None = None
                     ) -> dict[str, str] | None:
    """``base`` (e.g. the CPU convolution's options) plus ``--gpu-autotune``'s and
    ``--deterministic``'s."""
    return merge(base, gpu_compiler_options(cfg.gpu_autotune),
                 deterministic_options(cfg.deterministic))


def start(cfg: EngineConfig, name: str | None = None) -> Any:
    """What every experiment does first: check the engine flags (and with ``name``, the
    run folders' ``--resume`` / ``--overwrite`` rules, before any data is loaded), turn
    the compilation cache on (or off), resolve ``--dtype``, and say where it runs.
    Returns the compute dtype."""
    cfg.check()  # again: a config changed after it was built
    if name is not None:
        check_run_folders(name, cfg)
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
            "device": device_name(), "compute_capability": compute_capability(),
            "host_cpu": host.cpu_name(), "host_cpu_flags": host.cpu_flags(),
            "programs": len(trainer.programs), "program_list": trainer.programs}


def print_timing(timing: dict, dtype: str) -> None:
    names = ", ".join(f"{p['program']} {p['compile_s']:.1f} s" for p in timing["program_list"])
    print(f"compile {timing['compile_s']:.1f} s (+ {timing['trace_s']:.1f} s tracing) for "
          f"{timing['programs']} programs ({names}); training {timing['train_s']:.1f} s "
          f"(both excluded) on {timing['device']}, {dtype}")


def epoch_line(record: dict, epochs: int, eval_split: str = "test") -> str:
    """The line printed after an epoch, from its history ``record``."""
    compiled = record.get("compile_time_s", 0.0)
    compiled = f", compiling {compiled:.1f} s" if compiled > 0 else ""
    return (f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}, "
            f"{eval_split} loss {record['eval_loss']:.4f}, {eval_split} accuracy "
            f"{100 * record['eval_accuracy']:.2f}% ({record['train_time_s']:.1f} s "
            f"training{compiled})")


MAX_SEED = 2**31 - 1  # seeds are int32 for jax.random.key and NumPy alike
RESUME = ("no", "yes", "auto")


def resumes(folder: Path, cfg: "RunConfig") -> bool:
    """Whether the run in ``folder`` continues from a checkpoint: ``--resume`` (yes), or
    ``--resume auto`` when the folder holds one."""
    if cfg.resume == "auto":
        return bool(saved_epochs(folder))
    return cfg.resume == "yes"


@dataclasses.dataclass
class RunConfig(EngineConfig):
    """Flags every experiment has."""

    data_dir: str | None = flag(None, "local dataset directory in the plain layout (else "
                                      "$JAXHW_DATA_DIR, else TensorFlow Datasets downloads it)")
    checkpoint_dir: str | None = flag(None, "where checkpoints, history and results go "
                                            "(default: checkpoints/<experiment>)")
    resume: str = flag("no", "continue from the latest checkpoint in --checkpoint-dir: "
                             "--resume (or yes) needs one; auto continues when the folder "
                             "has one and starts fresh when it has none (for notebooks "
                             "re-run after a disconnect)", choices=RESUME, const="yes")
    overwrite: bool = flag(False, "delete the checkpoints already in --checkpoint-dir and "
                                  "start over")
    evaluate: bool = flag(False, "do not train: restore the latest checkpoint in "
                                 "--checkpoint-dir (a finished run's final weights, the "
                                 "ones its results.json reports) and evaluate it")
    seed: int = flag(0, "seed of every random choice (init, shuffling, augmentation, dropout)",
                     ge=0, le=MAX_SEED)
    train_limit: int = flag(0, "train on a random subset of this many examples (0 = all)",
                            ge=0)
    test_limit: int = flag(0, "test on a random subset of this many examples (0 = all)", ge=0)
    seeds: int = flag(1, "train this many seeds (--seed, --seed + 1, ...) back to back in one "
                         "process, compiling once; each seed checkpoints to "
                         "<checkpoint-dir>/seed_<s>, and results.json lists every seed's "
                         "accuracy and times with their mean and standard deviation",
                     ge=1, le=1000)
    predict: list[str] | None = flag(None, "do not train: load the run in --checkpoint-dir "
                                           "(its latest checkpoint) and print its predictions "
                                           "for these inputs (image files, review texts, or "
                                           "token sequences such as '5 6 7')", nargs="+")

    def __post_init__(self) -> None:
        if isinstance(self.resume, bool):  # the Python API's resume=True / False
            self.resume = "yes" if self.resume else "no"
        super().__post_init__()

    def rules(self) -> None:
        super().rules()
        if self.resume == "auto" and self.overwrite:
            raise ConfigError("--resume auto and --overwrite exclude each other")
        if self.evaluate and (self.resume != "no" or self.overwrite):
            raise ConfigError("--evaluate excludes --resume and --overwrite")
        if self.seed + self.seeds - 1 > MAX_SEED:
            raise ConfigError(f"--seed + --seeds - 1 must be at most {MAX_SEED}")


def check_batch(cfg: RunConfig, dataset: str, examples: int | None = None) -> None:
    """``--batch-size`` against the training examples a run of ``dataset`` will have:
    ``--train-limit`` of them, or ``examples`` (default: the published train split),
    checked before anything loads; a local folder with fewer is checked again once
    loaded."""
    batch = cfg.batch_size
    available = get_spec(dataset).train_examples if examples is None else examples
    limit = f" (--train-limit {cfg.train_limit})" if 0 < cfg.train_limit < available else ""
    available = min(cfg.train_limit, available) if cfg.train_limit else available
    if batch > available:
        raise ConfigError(f"--batch-size {batch} exceeds the {available:,} training "
                          f"examples{limit}; use at most {available}")


def predict_from(name: str, cfg: RunConfig) -> dict:
    """``--predict``: the predictions of the run in ``--checkpoint-dir`` (with several
    ``--seeds``, that of ``--seed``), printed as a table; returns them for results."""
    from jaxhw.predict import print_predictions
    predictions = print_predictions(run_dir(name, cfg, cfg.seed), cfg.predict)
    return {"predictions": [dataclasses.asdict(p) for p in predictions]}


def run_dir(name: str, cfg: RunConfig, seed: int | None = None) -> Path:
    """Where a run writes: ``--checkpoint-dir`` (default ``checkpoints/<name>``), and with
    several ``--seeds`` its ``seed_<seed>`` subfolder for each seed."""
    root = Path(cfg.checkpoint_dir or Path("checkpoints") / name).expanduser()
    return root if seed is None or cfg.seeds == 1 else root / f"seed_{seed}"


def run_seeds_of(cfg: RunConfig) -> list[int]:
    """The seeds ``--seed``, ``--seed + 1``, ... of ``--seeds``."""
    return [cfg.seed + k for k in range(cfg.seeds)]


def check_run_folders(name: str, cfg: RunConfig) -> None:
    """Apply the ``--resume`` / ``--overwrite`` / ``--evaluate`` rules to every seed's folder
    without changing anything, so that a conflict is reported before data is loaded; a
    training run also needs the folder free (no other run training in it) and writable."""
    if not cfg.evaluate:
        check_writable(run_dir(name, cfg))
        check_free(run_dir(name, cfg))
    for seed in run_seeds_of(cfg):
        _check_folder(run_dir(name, cfg, seed), cfg)


def _check_folder(folder: Path, cfg: RunConfig) -> None:
    if not cfg.evaluate:
        check_run(folder, resume=resumes(folder, cfg), overwrite=cfg.overwrite)
        return
    check_not_diverged(folder)
    check_run(folder, resume=True, overwrite=False, flag="--evaluate")


def check_not_diverged(folder: Path) -> None:
    """Raise :class:`CheckpointError` when ``folder``'s results.json records a run that
    diverged (its weights are those of the last finite epoch, not a finished run's)."""
    results_file = folder / "results.json"
    try:
        results = read_json(results_file, "")
    except RunFileError:  # missing or damaged: --evaluate writes it again
        return
    diverged = diverged_run(folder, results, "did not finish") if isinstance(
        results, dict) else None
    if diverged:
        raise CheckpointError(diverged)



def open_checkpoints(folder: Path, cfg: RunConfig) -> Checkpoints:
    """A seed's checkpoint folder, opened under the ``--resume`` / ``--overwrite`` /
    ``--evaluate`` rules (``--overwrite`` deletes what it holds)."""
    if cfg.evaluate:
        _check_folder(folder, cfg)
        return Checkpoints(folder)
    return open_run(folder, resume=resumes(folder, cfg), overwrite=cfg.overwrite)


def engine_trainer(cfg: EngineConfig, model: nn.Module, tx: optax.GradientTransformation,
                   compiler_options: dict[str, str] | None = None, **kwargs) -> Trainer:
    """A :class:`Trainer` with the engine flags applied (``--steps-per-call``,
    ``--gpu-autotune`` on top of ``compiler_options``, loss scaling when the compute
    dtype is float16); ``kwargs`` go to the Trainer."""
    return Trainer(model, tx, steps_per_call=cfg.steps_per_call,
                   compiler_options=engine_options(cfg, compiler_options),
                   loss_scaling=compute_dtype(cfg.dtype) == jnp.float16, on_nan=cfg.on_nan,
                   **kwargs)


@dataclasses.dataclass
class Plan:
    """What an experiment hands :func:`train_and_evaluate`: its compiled steps, its data
    on the device, and how each seed starts and ends.

    ``init_state(seed)`` returns a fresh state; ``test`` is evaluated after every epoch and
    ``final`` (default ``test``) at the end; ``eval_split`` names ``test`` in the printed
    lines and plots ("validation" where ``final`` is the test split); ``class_names`` asks
    for the per-class table and the confusion matrix; ``finish(state, folder, results)``
    runs after the final evaluation (decoding, attention plots, ...) and returns entries
    for results.json; ``metric`` is the results entry that ``--seeds`` summarises;
    ``extra`` holds constant entries for results.json; ``predictor`` is the trained
    network's record (``jaxhw.inference``), kept in the run folder for ``jaxhw.load``."""

    trainer: Trainer
    train: Data
    test: Data
    init_state: Callable[[int], TrainState]
    epochs: int
    batch_size: int
    final: Data | None = None
    class_names: Sequence[str] | None = None
    hooks: Sequence[Hook] = ()
    eval_batch_size: int = 500
    finish: Callable[[TrainState, Path, dict], dict] | None = None
    metric: str = "test_accuracy"
    extra: dict = dataclasses.field(default_factory=dict)
    learning_rate: Callable[[int], float] | None = None  # the schedule, for TensorBoard
    eval_split: str = "test"
    predictor: dict | None = None


def train_and_evaluate(name: str, cfg: RunConfig, plan: Plan) -> dict:
    """Train ``plan`` once per seed of ``--seeds`` (compiling once) and return the results
    written to ``--checkpoint-dir``/results.json: one seed's (see :func:`_train_one`), or
    for several a summary of every seed's, each of which keeps its own folder
    ``seed_<s>``. Every seed's folder is opened (``--overwrite`` deletes) only now, after
    the experiment has checked its flags, data and model."""
    seeds = run_seeds_of(cfg)
    with RunLock(run_dir(name, cfg)):  # taken before --overwrite clears, held to the end
        folders = {s: open_checkpoints(run_dir(name, cfg, s), cfg) for s in seeds}
        if len(seeds) == 1:
            return _train_one(name, cfg, plan, seeds[0], folders[seeds[0]])
        return _train_seeds(name, cfg, plan, folders)


def _train_seeds(name: str, cfg: RunConfig, plan: Plan, folders: dict[int, Checkpoints]
                 ) -> dict:
    """Every seed of ``folders`` in turn and their summary; a seed that diverges is
    reported and the others go on (the summary names it, then :class:`SeedsDiverged`
    ends the run)."""
    rows, diverged, compiled, results = [], [], 0.0, None
    for seed, folder in folders.items():
        print(f"--- seed {seed} ({len(rows) + len(diverged) + 1} of {len(folders)}) ---")
        try:
            results = _train_one(name, cfg, plan, seed, folder)
        except Diverged as e:
            print(f"seed {seed}: {e}")
            diverged.append({"seed": seed, **e.record()})
            continue
        rows.append({"seed": seed, "accuracy": results[plan.metric],
                     "train_s": results["train_s"], "compile_s": results["compile_s"] - compiled})
        compiled = results["compile_s"]  # the later seeds reuse the first one's programs
    accuracies = np.array([r["accuracy"] for r in rows])
    summary = {"experiment": name, "metric": plan.metric, "seeds": rows, "diverged": diverged,
               "config": dataclasses.asdict(cfg)}
    if rows:
        summary.update({
            "mean_accuracy": float(accuracies.mean()),
            "std_accuracy": float(accuracies.std(ddof=1)) if len(rows) > 1 else 0.0,
            "mean_train_s": float(np.mean([r["train_s"] for r in rows])),
            **{k: results[k] for k in ("device", "dtype", "host_cpu", "host_cpu_flags")}})
    root = run_dir(name, cfg)
    if jax.process_index() == 0:
        write_json(root / "results.json", summary)
    print(f"{'seed':>6} {'accuracy':>9} {'train s':>8} {'compile s':>10}")
    for r in rows:
        print(f"{r['seed']:>6} {100 * r['accuracy']:>8.2f}% {r['train_s']:>8.2f} "
              f"{r['compile_s']:>10.2f}")
    for d in diverged:
        print(f"{d['seed']:>6} {'diverged':>9} (step {d['step']}, epoch {d['epoch']})")
    if rows:
        print(f"mean {plan.metric.replace('_', ' ')} {100 * summary['mean_accuracy']:.2f}% "
              f"(std {100 * summary['std_accuracy']:.2f}) over {len(rows)} seeds, "
              f"{summary['mean_train_s']:.2f} s of training per seed on {summary['device']}"
              f"{' (' + summary['host_cpu'] + ')' if jax.default_backend() == 'cpu' else ''}; "
              f"results: {root / 'results.json'}")
    if diverged:
        names = ", ".join(str(d["seed"]) for d in diverged)
        raise SeedsDiverged(f"diverged: seed{'s' if len(diverged) > 1 else ''} {names} of "
                            f"{len(folders)} (their lines above say where and what to try); "
                            f"summary of the others: {root / 'results.json'}")
    return summary


def _train_one(name: str, cfg: RunConfig, plan: Plan, seed: int, ckpt: Checkpoints) -> dict:
    """One seed, top to bottom: the state (fresh, resumed, or with ``--evaluate`` the
    latest checkpoint); every epoch's training, evaluation on ``plan.test``, history line
    and checkpoint; the final evaluation on ``plan.final``; ``results.json`` and
    ``history.png`` (with class names also ``per_class_accuracy.md`` and
    ``confusion_matrix.png``) next to the checkpoints.

    Hooks see every train loss and epoch, then ``on_train_end(folder)`` and ``on_test(final
    evaluation)``, so an experiment can print the original notebook's lines. ``seed``
    draws the initialisation and the shuffles."""
    trainer = plan.trainer
    primary = jax.process_index() == 0  # one writer when several hosts train together

    # The state.
    state = plan.init_state(seed)
    print(f"{name}: {count_params(state.params):,} parameters, seed {seed}")
    history: list[dict] = []
    if cfg.evaluate:
        state, saved = ckpt.restore(state)
        history = list(saved.get("history", []))
        print(f"evaluating {ckpt.directory}, epoch {ckpt.latest_epoch()} (the latest)")
    elif resumes(ckpt.directory, cfg):
        state, saved, skipped = ckpt.restore_latest_good(state)
        history = list(saved.get("history", []))
        for epoch, reason in skipped:
            print(f"set aside {ckpt.directory / str(epoch)} as {epoch}.damaged, which does "
                  f"not read back ({reason})")
        print(f"resumed from {ckpt.directory} at epoch {len(history)}; its logged epochs:")
        for record in history:
            print(epoch_line(record, plan.epochs, plan.eval_split))

    # Every epoch: train -> evaluate -> history -> checkpoint. Compiling is timed apart
    # (trainer.setup_s), so the times below are the steps' alone.
    t_run = time.perf_counter()
    epochs = [] if cfg.evaluate else range(len(history) + 1, plan.epochs + 1)
    board = (TensorBoard(ckpt.directory, int(state.step), plan.learning_rate)
             if primary and epochs else None)
    hooks = list(plan.hooks) if board is None else [*plan.hooks, board]
    meta = {"config": dataclasses.asdict(cfg), "experiment": name, "predictor": plan.predictor}
    run_key = jax.random.key(seed)
    try:
        for epoch in epochs:
            c0, t0 = trainer.setup_s, time.perf_counter()
            state, train_loss = trainer.train_epoch(
                state, plan.train, plan.batch_size, jax.random.fold_in(run_key, epoch), epoch,
                plan.epochs, hooks)
            c1, t1 = trainer.setup_s, time.perf_counter()
            evaluation = trainer.evaluate(state, plan.test, plan.eval_batch_size,
                                          trainer.epoch_tta)
            c2, t2 = trainer.setup_s, time.perf_counter()
            if trainer.on_nan == "stop" and not np.isfinite(evaluation.loss):
                raise Diverged(f"the {plan.eval_split} loss", evaluation.loss, int(state.step),
                               epoch, plan.epochs)
            record = {"epoch": epoch, "step": int(state.step), "train_loss": train_loss,
                      "eval_loss": evaluation.loss, "eval_accuracy": evaluation.accuracy,
                      "train_time_s": (t1 - t0) - (c1 - c0),
                      "eval_time_s": (t2 - t1) - (c2 - c1), "compile_time_s": c2 - c0}
            history.append(record)
            tqdm.write(epoch_line(record, plan.epochs, plan.eval_split))
            ckpt.save(epoch, state, {**meta, "epoch": epoch, "history": history},
                      metrics=record)
            if primary:
                write_json(ckpt.directory / "history.json", history)
            for hook in hooks:
                hook.on_epoch_end(epoch, record, evaluation)
    except Diverged as e:
        _record_divergence(name, cfg, plan, ckpt, e)
        raise
    finally:
        if board is not None:
            board.close()
    if not cfg.evaluate:
        for hook in plan.hooks:
            hook.on_train_end(ckpt.directory)
    wall = time.perf_counter() - t_run

    # The final evaluation (all of the trainer's test-time views) and the results files.
    c0, t0 = trainer.setup_s, time.perf_counter()
    result = trainer.evaluate(state, plan.test if plan.final is None else plan.final,
                              plan.eval_batch_size)
    final_eval_s = time.perf_counter() - t0 - (trainer.setup_s - c0)  # compiling excluded
    table = None
    if plan.class_names is not None:
        table = per_class_table(result.labels, result.predictions, plan.class_names)
    if primary:
        _write_plots(plan, result, history, table, ckpt.directory)
    timing = timing_summary(trainer, history)
    results = {
        "experiment": name, "test_accuracy": result.accuracy, "test_loss": result.loss,
        "test_examples": len(result.labels), "epochs": len(history),
        "train_time_s": timing["train_s"], **timing, "dtype": compute_dtype(cfg.dtype).name,
        "final_eval_s": final_eval_s,
        "steps_per_call": trainer.block, "wall_time_this_run_s": wall,
        "parameters": count_params(state.params), "seed": seed, **plan.extra,
    }
    if plan.finish is not None:
        results.update(plan.finish(state, ckpt.directory, results))
    results.update({"config": dataclasses.asdict(cfg), "predictor": plan.predictor,
                    "history": history})
    if primary:
        write_json(ckpt.directory / "results.json", results)
    ckpt.close()
    if table is not None:
        print(table)
    for hook in plan.hooks:
        hook.on_test(result)
    print_timing(timing, results["dtype"])
    print(f"results: {ckpt.directory / 'results.json'}; plots: "
          f"{', '.join(sorted(p.name for p in ckpt.directory.glob('*.png')))}")
    return results


def _write_plots(plan: Plan, result: EvalResult, history: list[dict], table: str | None,
                 folder: Path) -> None:
    """The per-class table and confusion matrix (with class names) and the history plot."""
    from jaxhw.plotting import plot_confusion, plot_history  # matplotlib when needed
    if table is not None:
        write_atomically(folder / "per_class_accuracy.md",
                         lambda tmp: tmp.write_text(table + "\n"))
        optional_write("the confusion matrix plot", plot_confusion, result.labels,
                       result.predictions, plan.class_names, folder / "confusion_matrix.png")
    if history:
        optional_write("the history plot", plot_history, history, folder / "history.png",
                       plan.eval_split)


def _record_divergence(name: str, cfg: RunConfig, plan: Plan, ckpt: Checkpoints,
                       error: Diverged) -> None:
    """Complete ``error`` with the learning rate at its step and the kept epoch, and
    write results.json as ``"status": "diverged"`` (what ``jaxhw.load`` and ``--evaluate``
    refuse)."""
    lr = plan.learning_rate(max(error.step - 1, 0)) if plan.learning_rate else None
    error.completed(None if lr is None else float(lr), ckpt.latest_epoch())
    if jax.process_index() == 0:
        write_json(ckpt.directory / "results.json", {
            "experiment": name, "status": "diverged", "diverged": error.record(),
            "config": dataclasses.asdict(cfg), "predictor": plan.predictor})
    ckpt.close()


@dataclasses.dataclass(frozen=True)
class Images:
    """An image dataset as loaded: ``train_x [N, H, W, C] uint8``, ``train_y [N]``, the
    same for the test split, and the class names."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...]


def load_images(cfg: RunConfig, dataset: str, batch_size: int) -> Images:
    """``dataset`` from ``--data-dir`` with the ``--train-limit`` / ``--test-limit``
    subsets, checked against ``batch_size``."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be positive, got {batch_size}")
    train = load_split(dataset, "train", cfg.data_dir)
    test = load_split(dataset, "test", cfg.data_dir)
    train_x, train_y = subset(train.images, train.labels, cfg.train_limit, cfg.seed)
    test_x, test_y = subset(test.images, test.labels, cfg.test_limit, cfg.seed + 1)
    if batch_size > len(train_y):
        raise ConfigError(f"batch size {batch_size} exceeds the {len(train_y)} training images")
    return Images(train_x, train_y, test_x, test_y, tuple(get_spec(dataset).class_names))


def image_plan(name: str, trainer: Trainer, images: Images, *, epochs: int, batch_size: int,
               hooks: Sequence[Hook] = (),
               adjust: Callable[[TrainState], TrainState] | None = None,
               finish: Callable[[TrainState, Path, dict], dict] | None = None,
               learning_rate: Callable[[int], float] | None = None,
               predictor: dict | None = None) -> Plan:
    """The :class:`Plan` of an image classifier: ``images`` put on the device once, each
    seed's fresh state passed through ``adjust`` (e.g. setting a stem computed from the
    data)."""
    if epochs < 1:
        raise ConfigError(f"epochs must be positive, got {epochs}")

    def init_state(seed: int) -> TrainState:
        state = trainer.init_state(jax.random.key(seed), images.train_x[:1])
        return state if adjust is None else adjust(state)

    print(f"{name}: {len(images.train_y):,} train / {len(images.test_y):,} test images, "
          f"{len(images.train_y) // batch_size} steps per epoch, {jax.device_count()} x "
          f"{jax.devices()[0].platform}")
    return Plan(trainer, trainer.put(images.train_x, images.train_y),
                trainer.put(images.test_x, images.test_y), init_state, epochs, batch_size,
                class_names=images.class_names, hooks=hooks, finish=finish,
                learning_rate=learning_rate, predictor=predictor)
