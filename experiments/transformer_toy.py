"""Part 1-2: the from-scratch Transformer on the original demo and on tasks it can learn.

    python -m experiments.transformer_toy                       # the original demo (random)
    python -m experiments.transformer_toy --init torch          # ... first loss ~8.68
    python -m experiments.transformer_toy --preset small        # the demo, minutes on a CPU
    python -m experiments.transformer_toy --task reverse        # learn to reverse sequences

``--task random``, the original demo: random tokens (vocab 5000) as source and target,
teacher forcing, Adam, 100 full-batch steps printing ``Epoch: N, Loss: x`` (random targets
can only be memorised: it shows the loss falling). ``--task reverse`` (also ``copy``,
``sort``): variable-length sequences, evaluated on held-out ones by greedy decoding,
reporting exact-sequence accuracy; ``--data-dir`` keeps the sequences or supplies yours.
Model-size flags left unset take the task's defaults (each flag's help lists them).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import cli, config, inference
from jaxhw.config import ConfigError, flag
from jaxhw.files import read_json
from jaxhw.data import subset
from jaxhw.data.toy import (BOS, EOS, FIRST, TASKS, distinct_sequences, load_task_splits,
                            random_tokens, save_task_splits, task_splits)
from jaxhw.experiment import (MAX_SEED, RESUME, Plan, RunConfig, engine_options,
                              engine_trainer, predict_from, print_timing, run_dir, start,
                              timing_summary, train_and_evaluate)
from jaxhw.models.transformer import Transformer, greedy_decode
from jaxhw.train.precision import compute_dtype
from jaxhw.train import TrainState, count_params, sequence_loss, write_json
from jaxhw.train.checkpoint import CheckpointError
from jaxhw.train.printouts import DemoPrinter
from jaxhw.train.schedules import warmup_steps

# Defaults per task: the original demo's sizes, and a small model for the sequence tasks.
TASK_DEFAULTS = {
    "random": dict(vocab=5000, dim=512, head_num=4, layer_num=3, ffn_dim=2048, seq_len=100,
                   batch_size=64, lr=1e-4),
    "sequence": dict(vocab=20, dim=64, head_num=4, layer_num=2, ffn_dim=256, seq_len=16,
                     batch_size=64, lr=1e-3),
}
MAX_WARMUP_STEPS = 500  # long runs need no longer warm-up than this


@dataclasses.dataclass
class Config(RunConfig):
    task: str = flag("random", "random (the original demo) or a learnable sequence task",
                     choices=["random", *sorted(TASKS)])
    init: str = flag("flax", "parameter initialisation: flax (Flax defaults) or torch "
                             "(PyTorch's nn.Linear / nn.Embedding defaults)",
                     choices=["flax", "torch"])
    vocab: int | None = flag(None, "vocabulary size incl. pad/BOS/EOS (default: 5000 random, "
                                   "20 sequence tasks)", ge=FIRST + 1)
    dim: int | None = flag(None, "model width (default: 512 random, 64 sequence tasks)",
                                  ge=1)
    head_num: int | None = flag(None, "attention heads (default: 4)", ge=1)
    layer_num: int | None = flag(None, "encoder and decoder layers (default: 3 random, 2 tasks)",
                                        ge=1)
    ffn_dim: int | None = flag(None, "FFN hidden width (default: 2048 random, 256 tasks)",
                                      ge=1)
    seq_len: int | None = flag(None, "sequence length of the demo / longest task sequence "
                                     "(default: 100 random, 16 tasks)", ge=1)
    min_len: int = flag(2, "shortest task sequence", ge=1)
    dropout: float = flag(0.1, "dropout after embeddings and every sublayer", ge=0,
                           lt=1)
    batch_size: int | None = flag(None, "sequences per step (default: 64)", ge=1)
    lr: float | None = flag(None, "Adam learning rate (default: 1e-4 random; 1e-3 peak of a "
                                  "warm-up + cosine schedule for tasks)", gt=0)
    warmup: float = flag(0.1, "sequence tasks: fraction of the steps spent warming up (at "
                              f"most {MAX_WARMUP_STEPS} steps)", ge=0, le=1)
    steps: int = flag(100, "random task: full-batch steps", ge=1)
    epochs: int = flag(8, "sequence tasks: passes over the training sequences", ge=1)
    data_dir: str | None = flag(None, "sequence tasks: folder whose transformer_<task>/ holds "
                                      "train.npz and test.npz (int arrays src, tgt; 0-padded, "
                                      "BOS/EOS framed), yours or written by an earlier run; "
                                      "when absent they are generated and written there "
                                      "(default: generated in memory)")
    train_limit: int = flag(40000, "sequence tasks: distinct training sequences generated (of "
                                   "a --data-dir of your own: a random subset of this many)",
                            aliases=["--train-size"], ge=1)
    test_limit: int = flag(2000, "sequence tasks: held-out sequences generated, disjoint from "
                                 "training (of your own: a random subset)",
                           aliases=["--test-size"], ge=1)
    checkpoint_dir: str | None = flag(None, "results (and for sequence tasks checkpoints, "
                                            "history and plots; default: "
                                            "checkpoints/transformer_<task>)")
    resume: str = flag("no", "sequence tasks: continue from the latest checkpoint (yes, "
                             "or auto: when there is one); the random demo: show a finished "
                             "demo's logged losses (yes, or auto: train when there is "
                             "none)", choices=RESUME, const="yes")
    overwrite: bool = flag(False, "sequence tasks: delete existing checkpoints and start over")
    evaluate: bool = flag(False, "sequence tasks: do not train; restore the latest "
                                 "checkpoint (the final weights) and evaluate it")
    seed: int = flag(0, "seed of the data, initialisation, shuffling and dropout", ge=0,
                     le=MAX_SEED)
    seeds: int = flag(1, "sequence tasks: train this many seeds (--seed, --seed + 1, ...; the "
                         "data stays that of --seed) back to back, compiling once; "
                         "results.json summarises their exact-sequence accuracies", ge=1, le=1000)

    def sizes(self) -> dict:
        """The model and batch sizes: the flags given, else the task's defaults."""
        defaults = TASK_DEFAULTS["random" if self.task == "random" else "sequence"]
        return {k: v if getattr(self, k) is None else getattr(self, k)
                for k, v in defaults.items()}

    def rules(self) -> None:
        super().rules()
        if self.task == "random":
            used = [f for f, on in (("--evaluate", self.evaluate),
                                    ("--seeds", self.seeds != 1),
                                    ("--data-dir", self.data_dir),
                                    ("--predict", self.predict)) if on]
            if used:
                raise ConfigError(f"{', '.join(used)}: only for the sequence tasks (--task "
                                  f"{' / '.join(sorted(TASKS))}); the random demo runs "
                                  f"--steps steps and writes results.json (--resume "
                                  f"shows a finished demo's logged losses)")
        sizes = self.sizes()
        if sizes["dim"] % sizes["head_num"]:
            raise ConfigError(f"--dim {sizes['dim']} must be divisible by --head-num "
                              f"{sizes['head_num']}")
        if self.task == "random":
            return
        if self.min_len > sizes["seq_len"]:
            raise ConfigError(f"--min-len {self.min_len} exceeds --seq-len {sizes['seq_len']}")
        if not self.data_dir:  # generated here: enough distinct sequences must exist
            distinct = distinct_sequences(sizes["vocab"], self.min_len, sizes["seq_len"])
            if self.train_limit + self.test_limit > distinct:
                raise ConfigError(
                    f"--train-limit + --test-limit = {self.train_limit + self.test_limit} "
                    f"distinct sequences asked for, but only {distinct} exist with --vocab "
                    f"{sizes['vocab']} and lengths {self.min_len}..{sizes['seq_len']}; "
                    f"raise --vocab or --seq-len")
            if sizes["batch_size"] > self.train_limit:
                raise ConfigError(f"--batch-size {sizes['batch_size']} exceeds the "
                                  f"{self.train_limit} training sequences (--train-limit)")


PRESETS = {
    "original": {},
    "small": dict(dim=128, head_num=4, layer_num=2, ffn_dim=512, seq_len=50, vocab=1000),
}


def resolve(cfg: Config) -> Config:
    """Fill unset sizes with the task's defaults (the values were checked when ``cfg``
    was built, and are again)."""
    return dataclasses.replace(cfg, **cfg.sizes())


def model_args(cfg: Config, max_len: int) -> dict:
    """The Transformer's arguments (JSON), as ``jaxhw.inference`` rebuilds them."""
    return dict(input_lib_size=cfg.vocab, output_lib_size=cfg.vocab, dim=cfg.dim,
                head_num=cfg.head_num, layer_num=cfg.layer_num, ffn_dim=cfg.ffn_dim,
                seq_len_max=max_len, dropout=cfg.dropout, init_style=cfg.init)


def build(cfg: Config, max_len: int, dtype=jnp.float32) -> Transformer:
    return inference.build_model("transformer", model_args(cfg, max_len), dtype)


def teacher_forcing(src: np.ndarray, tgt: np.ndarray) -> tuple[tuple, np.ndarray]:
    """Inputs ``(src, tgt[:, :-1])`` and labels ``tgt[:, 1:]``."""
    return (src, tgt[:, :-1]), tgt[:, 1:]


DEMO_SETTINGS = ("init", "vocab", "dim", "head_num", "layer_num", "ffn_dim", "seq_len",
                 "dropout", "batch_size", "lr", "steps", "seed")


def logged_demo(cfg: Config) -> dict | None:
    """The results.json of a finished demo with ``cfg``'s settings in its run folder, or
    None (none there, or one with other settings)."""
    path = run_dir("transformer_random", cfg) / "results.json"
    if not path.is_file():
        return None
    was = read_json(path, "delete it to run the demo again")
    same = all(was.get("config", {}).get(k) == getattr(cfg, k) for k in DEMO_SETTINGS)
    return was if same and len(was.get("losses", [])) == cfg.steps else None


def run_random(cfg: Config, dtype) -> dict:
    """The original demo: ``--steps`` full-batch steps on random tokens, each loss printed;
    no checkpoints (it takes a minute on a GPU). With ``--resume`` (auto), a finished demo
    with the same settings in the run folder is shown from its log instead. Returns what
    results.json holds."""
    if cfg.resume != "no":
        was = logged_demo(cfg)
        if was is not None:
            print(f"Transformer: {was['parameters']:,} parameters, init {cfg.init} (the "
                  f"finished demo in {run_dir('transformer_random', cfg)}, trained on "
                  f"{was['device']}; its logged losses)")
            for step, loss in enumerate(was["losses"], 1):
                print(f"Epoch: {step}, Loss: {loss}")
            print(f"time per step: {was['step_ms'] / 1000:.3f} s (median; compilation "
                  f"excluded)")
            return was
        if cfg.resume == "yes":
            raise CheckpointError(f"--resume: no finished demo with these settings in "
                                  f"{run_dir('transformer_random', cfg)}; run without "
                                  f"--resume")
    src, tgt = random_tokens(cfg.batch_size, cfg.seq_len, cfg.vocab, cfg.seed)
    x, y = teacher_forcing(src, tgt)
    tx = optax.adam(cfg.lr, b1=0.9, b2=0.98, eps=1e-9)
    trainer = engine_trainer(dataclasses.replace(cfg, steps_per_call=1),
                             build(cfg, cfg.seq_len, dtype), tx, loss_fn=sequence_loss(),
                             pad_label=0)
    state = trainer.init_state(jax.random.key(cfg.seed), (x[0][:1], x[1][:1]))
    data = trainer.put(x, y)
    print(f"Transformer: {count_params(state.params):,} parameters, init {cfg.init}")
    printer, times, losses = DemoPrinter(), [], []
    for step in range(1, cfg.steps + 1):
        c0, t0 = trainer.setup_s, time.perf_counter()
        state, loss = trainer.train_epoch(state, data, cfg.batch_size, jax.random.key(step),
                                          epoch=step, hooks=[printer], progress=False)
        times.append(time.perf_counter() - t0 - (trainer.setup_s - c0))
        losses.append(loss)
    timing = {**timing_summary(trainer, [{"train_time_s": t} for t in times]),
              "step_ms": 1000 * float(np.median(times))}
    print(f"time per step: {np.median(times):.3f} s (median; compilation excluded)")
    print_timing(timing, jnp.dtype(dtype).name)
    results = {
        "task": "random", "first_loss": losses[0], "last_loss": losses[-1], "losses": losses,
        **timing, "dtype": jnp.dtype(dtype).name, "parameters": count_params(state.params),
        "config": dataclasses.asdict(cfg)}
    write_json(run_dir("transformer_random", cfg) / "results.json", results)
    return results


def sequences(cfg: Config) -> tuple[tuple, tuple]:
    """The task's train and held-out ``(src, tgt)``: from ``--data-dir`` when it holds them
    (limited to random subsets of ``--train-limit`` / ``--test-limit``), else generated
    (and written to ``--data-dir`` when one is given)."""
    settings = {"task": cfg.task, "train": cfg.train_limit, "test": cfg.test_limit,
                "vocab": cfg.vocab, "min_len": cfg.min_len, "max_len": cfg.seq_len,
                "seed": cfg.seed}
    folder = Path(cfg.data_dir).expanduser() / f"transformer_{cfg.task}" if cfg.data_dir else None
    loaded = load_task_splits(folder, settings) if folder else None
    if loaded is None:
        try:
            loaded = task_splits(cfg.task, cfg.train_limit, cfg.test_limit, cfg.vocab,
                                 cfg.min_len, cfg.seq_len, cfg.seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if folder:
            save_task_splits(folder, *loaded, settings)
            print(f"generated sequences written to {folder}")
        return loaded
    print(f"sequences read from {folder}")
    (train_src, train_tgt), (test_src, test_tgt) = loaded
    return (subset(train_src, train_tgt, cfg.train_limit, cfg.seed),
            subset(test_src, test_tgt, cfg.test_limit, cfg.seed + 1))


def decode_and_plot(model: Transformer, test_src: np.ndarray, test_tgt: np.ndarray,
                    max_len: int):
    """What runs after the final evaluation (:class:`~jaxhw.experiment.Plan`'s ``finish``):
    greedy decoding of the held-out sources (compiled once for every seed), the
    exact-sequence accuracy, and the attention and positional-encoding plots."""
    compiled = {}
    src = jnp.asarray(test_src)

    def finish(state: TrainState, folder: Path, results: dict) -> dict:
        timing = {"decode_trace_s": 0.0, "decode_compile_s": 0.0}
        if "decode" not in compiled:
            t0 = time.perf_counter()
            lowered = jax.jit(lambda params, s: greedy_decode(model, params, s, BOS, EOS,
                                                              max_len)).lower(state.params, src)
            t1 = time.perf_counter()
            compiled["decode"] = lowered.compile()
            timing = {"decode_trace_s": t1 - t0, "decode_compile_s": time.perf_counter() - t1}
        t1 = time.perf_counter()
        pred = np.asarray(compiled["decode"](state.params, src))
        exact = float(np.mean(np.all(pred == test_tgt, axis=1)))
        decode_time = time.perf_counter() - t1
        print(f"exact-sequence accuracy: {100 * exact:.2f}% ({len(test_src)} held-out "
              f"sequences, greedy decoding, {decode_time:.1f} s)")
        from jaxhw.plotting import plot_attention, plot_positional_encoding
        plot_positional_encoding(max_len, model.dim, folder / "positional_encoding.png")
        _, inter = model.apply({"params": state.params}, src[:1], jnp.asarray(pred[:1, :-1]),
                               mutable=["intermediates"])
        plot_attention(inter["intermediates"], test_src[0], pred[0], folder / "attention.png")
        return {"exact_sequence_accuracy": exact, "decode_time_s": decode_time, **timing}

    return finish


def run_sequence_task(cfg: Config, dtype) -> dict:
    """Train on a sequence task with teacher forcing, then decode the held-out sequences;
    returns what results.json holds."""
    name = f"transformer_{cfg.task}"
    max_len = cfg.seq_len + 2  # BOS + content + EOS
    (train_src, train_tgt), (test_src, test_tgt) = sequences(cfg)
    if not 1 <= cfg.batch_size <= len(train_src):
        raise ConfigError(f"--batch-size {cfg.batch_size} must lie in 1..{len(train_src)} "
                          f"(the training sequences)")
    total = cfg.epochs * (len(train_src) // cfg.batch_size)
    schedule = optax.warmup_cosine_decay_schedule(  # decay_steps counts the warm-up too
        0.0, cfg.lr, warmup_steps=min(MAX_WARMUP_STEPS, warmup_steps(cfg.warmup, total)),
        decay_steps=total)
    model = build(cfg, max_len, dtype)
    trainer = engine_trainer(cfg, model, optax.adam(schedule, b1=0.9, b2=0.98, eps=1e-9),
                             loss_fn=sequence_loss(), eval_loss_fn=sequence_loss(), pad_label=0)
    x, y = teacher_forcing(train_src, train_tgt)
    test_x, test_y = teacher_forcing(test_src, test_tgt)
    init = lambda seed: trainer.init_state(jax.random.key(seed), (x[0][:1], x[1][:1]))  # noqa: E731
    print(f"Transformer ({cfg.task}): {len(train_src):,} train / {len(test_src):,} held-out "
          f"sequences")
    plan = Plan(trainer, trainer.put(x, y), trainer.put(test_x, test_y), init, cfg.epochs,
                cfg.batch_size, finish=decode_and_plot(model, test_src, test_tgt, max_len),
                metric="exact_sequence_accuracy", extra={"task": cfg.task},
                learning_rate=schedule, predictor=predictor(cfg))
    return train_and_evaluate(name, cfg, plan)


def predictor(cfg: Config) -> dict:
    """The trained Transformer's record (model and sequence sizes) for :func:`jaxhw.load`."""
    cfg = resolve(cfg)
    return inference.sequence_record(
        "transformer", model_args(cfg, cfg.seq_len + 2), compute_dtype(cfg.dtype),
        max_len=cfg.seq_len + 2, seq_len=cfg.seq_len, vocab=cfg.vocab,
        compiler_options=engine_options(cfg))


def run(cfg: Config) -> dict:
    """The demo or a sequence task, as ``--task`` says; returns what results.json holds."""
    cfg = resolve(cfg)
    if cfg.predict:
        return predict_from(f"transformer_{cfg.task}", cfg)
    if cfg.task == "random":
        return run_random(cfg, start(cfg))
    return run_sequence_task(cfg, start(cfg, f"transformer_{cfg.task}"))


def parse(argv=None) -> Config:
    """The command line ``argv`` (default: ``sys.argv[1:]``) as a :class:`Config`, presets
    applied; a bad value ends the program with argparse's one line."""
    return config.parse(Config, __doc__, argv, PRESETS)


def main(argv=None) -> None:
    run(parse(argv))


if __name__ == "__main__":
    cli.run(main)
