"""Part 1-2: the from-scratch Transformer on the original demo and on tasks it can learn.

    python -m experiments.transformer_toy                       # the original demo (random)
    python -m experiments.transformer_toy --init torch          # ... first loss ~8.68
    python -m experiments.transformer_toy --preset small        # the demo, minutes on a CPU
    python -m experiments.transformer_toy --task reverse        # learn to reverse sequences

``--task random`` is the original demo: random tokens (vocab 5000) as source and target,
64 x 100, teacher forcing (input tgt[:, :-1], labels tgt[:, 1:]), cross-entropy ignoring
id 0, Adam 1e-4 / (0.9, 0.98) / 1e-9, 100 full-batch steps printing ``Epoch: N, Loss: x``.
Random targets cannot be learned beyond memorisation, so it only shows the loss falling.

``--task reverse`` (also ``copy``, ``sort``) proves the model works: variable-length
sequences, 0-padded, trained with teacher forcing and evaluated on held-out sequences by
greedy autoregressive decoding (a ``jax.lax`` loop under jit), reporting exact-sequence
accuracy. Model-size flags left unset take the task's defaults (listed in each flag's help).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import cli, config
from jaxhw.config import ConfigError, flag
from jaxhw.data.toy import BOS, EOS, TASKS, random_tokens, sequence_task
from jaxhw.models.transformer import Transformer, greedy_decode
from jaxhw.experiment import EngineConfig, engine_options, print_timing, start, timing_summary
from jaxhw.train import Hook, Trainer, count_params, open_run, sequence_loss, write_json

# Defaults per task: the original demo's sizes, and a small model for the sequence tasks.
TASK_DEFAULTS = {
    "random": dict(vocab=5000, dim=512, head_num=4, layer_num=3, ffn_dim=2048, seq_len=100,
                   batch_size=64, lr=1e-4),
    "sequence": dict(vocab=20, dim=64, head_num=4, layer_num=2, ffn_dim=256, seq_len=16,
                     batch_size=64, lr=1e-3),
}


@dataclasses.dataclass
class Config(EngineConfig):
    task: str = flag("random", "random (the original demo) or a learnable sequence task",
                     choices=["random", *sorted(TASKS)])
    init: str = flag("flax", "parameter initialisation: flax (Flax defaults) or torch "
                             "(PyTorch's nn.Linear / nn.Embedding defaults)",
                     choices=["flax", "torch"])
    vocab: int | None = flag(None, "vocabulary size incl. pad/BOS/EOS (default: 5000 random, "
                                   "20 sequence tasks)")
    dim: int | None = flag(None, "model width (default: 512 random, 64 sequence tasks)")
    head_num: int | None = flag(None, "attention heads (default: 4)")
    layer_num: int | None = flag(None, "encoder and decoder layers (default: 3 random, 2 tasks)")
    ffn_dim: int | None = flag(None, "FFN hidden width (default: 2048 random, 256 tasks)")
    seq_len: int | None = flag(None, "sequence length of the demo / longest task sequence "
                                     "(default: 100 random, 16 tasks)")
    min_len: int = flag(2, "shortest task sequence")
    dropout: float = flag(0.1, "dropout after embeddings and every sublayer")
    batch_size: int | None = flag(None, "sequences per step (default: 64)")
    lr: float | None = flag(None, "Adam learning rate (default: 1e-4 random; 1e-3 peak of a "
                                  "warm-up + cosine schedule for tasks)")
    steps: int = flag(100, "random task: full-batch steps")
    epochs: int = flag(8, "sequence tasks: passes over the training sequences")
    train_limit: int = flag(40000, "sequence tasks: distinct training sequences generated",
                            aliases=["--train-size"])
    test_limit: int = flag(2000, "sequence tasks: held-out sequences generated (disjoint from "
                                 "training)", aliases=["--test-size"])
    checkpoint_dir: str | None = flag(None, "results (and for sequence tasks checkpoints, "
                                            "history and plots; default: "
                                            "checkpoints/transformer_<task>)")
    resume: bool = flag(False, "sequence tasks: continue from the latest checkpoint")
    overwrite: bool = flag(False, "sequence tasks: delete existing checkpoints and start over")
    seed: int = flag(0, "seed of the data, initialisation, shuffling and dropout")


PRESETS = {
    "original": {},
    "small": dict(dim=128, head_num=4, layer_num=2, ffn_dim=512, seq_len=50, vocab=1000),
}


def resolve(cfg: Config) -> Config:
    """Fill unset sizes with the task's defaults, and check the values."""
    if cfg.task != "random" and cfg.task not in TASKS:
        raise ConfigError(f"unknown --task {cfg.task!r}; choose random or one of {sorted(TASKS)}")
    if cfg.init not in ("flax", "torch"):
        raise ConfigError(f"--init must be flax or torch, got {cfg.init!r}")
    defaults = TASK_DEFAULTS["random" if cfg.task == "random" else "sequence"]
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items()
                                      if getattr(cfg, k) is None})
    if cfg.dim % cfg.head_num:
        raise ConfigError(f"--dim {cfg.dim} must be divisible by --head-num {cfg.head_num}")
    return cfg


def build(cfg: Config, max_len: int, dtype=jnp.float32) -> Transformer:
    return Transformer(cfg.vocab, cfg.vocab, cfg.dim, cfg.head_num, cfg.layer_num, cfg.ffn_dim,
                       seq_len_max=max_len, dropout=cfg.dropout, init_style=cfg.init,
                       dtype=dtype)


def teacher_forcing(src: np.ndarray, tgt: np.ndarray) -> tuple[tuple, np.ndarray]:
    """Inputs ``(src, tgt[:, :-1])`` and labels ``tgt[:, 1:]``."""
    return (src, tgt[:, :-1]), tgt[:, 1:]


class EpochPrinter(Hook):
    """The original demo's ``Epoch: N, Loss: x`` (one full-batch step per "epoch")."""

    def on_losses(self, epoch, first_step, losses):
        for loss in losses:
            print(f"Epoch: {epoch}, Loss: {loss}")


def out_dir(cfg: Config) -> Path:
    return Path(cfg.checkpoint_dir or f"checkpoints/transformer_{cfg.task}")


def run_random(cfg: Config, dtype) -> None:
    src, tgt = random_tokens(cfg.batch_size, cfg.seq_len, cfg.vocab, cfg.seed)
    x, y = teacher_forcing(src, tgt)
    tx = optax.adam(cfg.lr, b1=0.9, b2=0.98, eps=1e-9)
    trainer = Trainer(build(cfg, cfg.seq_len, dtype), tx, loss_fn=sequence_loss(), pad_label=0,
                      steps_per_call=1, compiler_options=engine_options(cfg))
    state = trainer.init_state(jax.random.key(cfg.seed), (x[0][:1], x[1][:1]))
    data = trainer.put(x, y)
    print(f"Transformer: {count_params(state.params):,} parameters, init {cfg.init}")
    printer, times, losses = EpochPrinter(), [], []
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
    write_json(out_dir(cfg) / "results.json", {
        "task": "random", "first_loss": losses[0], "last_loss": losses[-1], "losses": losses,
        **timing, "dtype": jnp.dtype(dtype).name, "parameters": count_params(state.params),
        "config": dataclasses.asdict(cfg)})


def run_sequence_task(cfg: Config, dtype) -> None:
    max_len = cfg.seq_len + 2  # BOS + content + EOS
    ckpt = open_run(out_dir(cfg), resume=cfg.resume, overwrite=cfg.overwrite)
    train_src, train_tgt = sequence_task(cfg.task, cfg.train_limit, cfg.vocab, cfg.min_len,
                                         cfg.seq_len, cfg.seed)
    test_src, test_tgt = sequence_task(cfg.task, cfg.test_limit, cfg.vocab, cfg.min_len,
                                       cfg.seq_len, cfg.seed + 1,
                                       exclude={r.tobytes() for r in train_src})
    steps_per_epoch = cfg.train_limit // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(  # decay_steps counts the warm-up too
        0.0, cfg.lr, warmup_steps=min(500, total // 10), decay_steps=total)
    tx = optax.adam(schedule, b1=0.9, b2=0.98, eps=1e-9)
    model = build(cfg, max_len, dtype)
    trainer = Trainer(model, tx, loss_fn=sequence_loss(), eval_loss_fn=sequence_loss(),
                      pad_label=0, steps_per_call=cfg.steps_per_call,
                      compiler_options=engine_options(cfg))
    x, y = teacher_forcing(train_src, train_tgt)
    state = trainer.init_state(jax.random.key(cfg.seed), (x[0][:1], x[1][:1]))
    history = []
    if cfg.resume:
        state, history, _ = trainer.resume(ckpt, state)
        print(f"resumed from {ckpt.directory} at epoch {len(history)}")
    test_x, test_y = teacher_forcing(test_src, test_tgt)
    print(f"Transformer ({cfg.task}): {count_params(state.params):,} parameters, "
          f"{cfg.train_limit:,} train / {cfg.test_limit:,} held-out sequences")
    state, history = trainer.fit(state, trainer.put(x, y), trainer.put(test_x, test_y),
                                 epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                                 checkpoints=ckpt, history=history,
                                 meta={"config": dataclasses.asdict(cfg)})
    timing = timing_summary(trainer, history)

    decode = jax.jit(lambda params, src: greedy_decode(model, params, src, BOS, EOS, max_len))
    t0 = time.perf_counter()
    decode = decode.lower(state.params, jnp.asarray(test_src))
    t1 = time.perf_counter()
    decode = decode.compile()
    timing["trace_s"] += t1 - t0
    timing["compile_s"] += time.perf_counter() - t1
    t1 = time.perf_counter()
    pred = np.asarray(decode(state.params, jnp.asarray(test_src)))
    exact = float(np.mean(np.all(pred == test_tgt, axis=1)))
    decode_time = time.perf_counter() - t1
    print(f"exact-sequence accuracy: {100 * exact:.2f}% ({cfg.test_limit} held-out sequences, "
          f"greedy decoding, {decode_time:.1f} s)")

    from jaxhw.plotting import plot_attention, plot_positional_encoding
    plot_positional_encoding(max_len, cfg.dim, ckpt.directory / "positional_encoding.png")
    _, inter = model.apply({"params": state.params}, jnp.asarray(test_src[:1]),
                           jnp.asarray(pred[:1, :-1]), mutable=["intermediates"])
    plot_attention(inter["intermediates"], test_src[0], pred[0], ckpt.directory / "attention.png")
    write_json(ckpt.directory / "results.json", {
        "task": cfg.task, "exact_sequence_accuracy": exact, "train_time_s": timing["train_s"],
        **timing, "dtype": jnp.dtype(dtype).name, "steps_per_call": trainer.block,
        "decode_time_s": decode_time, "parameters": count_params(state.params),
        "config": dataclasses.asdict(cfg), "history": history})
    ckpt.close()
    print_timing(timing, jnp.dtype(dtype).name)
    print(f"results, attention.png and positional_encoding.png in {ckpt.directory}")


def main(argv=None) -> None:
    cfg = resolve(config.parse(Config, __doc__, argv, PRESETS))
    dtype = start(cfg)
    if cfg.task == "random":
        run_random(cfg, dtype)
    else:
        run_sequence_task(cfg, dtype)


if __name__ == "__main__":
    cli.run(main)
