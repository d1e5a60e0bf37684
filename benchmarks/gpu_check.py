"""One command that checks every experiment on whatever device is present.

    python -m benchmarks.gpu_check --data-dir ~/.cache/jaxhw-data     # ~8 min on one H200
    python -m benchmarks.gpu_check --smoke                            # seconds, any CPU

Runs a short budget of each experiment through its own command-line entry point (so the
engine, the flags and results.json are what users get), then prints one table and writes
``benchmarks/results/gpu_check.json``: a list ``rows`` of ``{experiment, device, dtype,
compile_s, step_ms, throughput, unit, accuracy}`` plus what each row ran. ``compile_s`` is
XLA's compile time of every program the run built (tracing excluded, reported apart as
``trace_s``), with a cold compilation cache by default; ``step_ms`` is the mean optimizer
step after compilation.

Rows: CIFAR-10 BetterNet ``--preset gpu`` and the cpu preset, the ViT, the Transformer's
reverse task and its full original demo (``--init torch``, 100 steps), BERT fine-tuning with
``--model minilm`` (or ``--bert-dir``), and a bert-base-shaped BERT with random weights
built from transformers' ``BertConfig()`` (batch 32, length 256), timed for throughput only,
once per XLA GPU autotuning level in ``--bert-autotune``. A row that fails is recorded with
its error and the check goes on; rows that would start after ``--budget-s`` are skipped.

``--smoke`` runs the same rows at toy sizes on data it writes itself (a tiny BERT in place
of MiniLM, ``tests.tiny.save_tiny_bert``, and a small bert-base stand-in), so a
CPU test exercises the whole check.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from jaxhw import config
from jaxhw.config import Checked, ConfigError, Domain, Items, flag
from jaxhw.train.precision import DTYPES

OUT = Path("benchmarks/results/gpu_check.json")
# Every row's name, in order (the bert-base row once per --bert-autotune level, with the
# level appended as _autotune<N>).
ROW_NAMES = ("cifar_betternet_gpu_preset", "cifar_betternet_cpu_preset", "vit_fashion_mnist",
             "transformer_reverse", "transformer_demo_torch_init", "bert_imdb_minilm",
             "bert_base_shaped_random")
AUTOTUNE_LEVELS = Items(Domain(ge=0, le=4, integer=True, words=("default",)))  # XLA's levels
COLUMNS = ("experiment", "device", "dtype", "compile_s", "step_ms", "throughput", "unit",
           "accuracy")


def from_results(results: dict, unit: str, accuracy_key: str) -> dict:
    """A table row from an experiment's results.json; a step trains the run's
    ``--batch-size`` examples (its saved config), whatever preset set it."""
    per_step = results["config"]["batch_size"]
    history = results["history"]
    steps = int(history[-1]["step"])
    step_s = results["train_s"] / max(steps, 1)
    later = [r["train_time_s"] for r in history[1:]]
    return {"device": results["device"], "dtype": results["dtype"],
            # the Transformer's greedy decoder compiles apart from the train steps
            "compile_s": results["compile_s"] + results.get("decode_compile_s", 0.0),
            "trace_s": results.get("trace_s"),
            "step_ms": 1000 * step_s, "throughput": per_step / step_s if step_s else None,
            "unit": unit, "accuracy": results[accuracy_key], "steps": steps,
            "examples_per_step": per_step,
            "epoch_s_after_first": float(np.mean(later)) if later else None,
            "train_s": results["train_s"]}


def run_experiment(module: str, argv: list[str], out_dir: Path) -> dict:
    """Run ``python -m experiments.<module> argv`` in this process, quietly; its results."""
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        mod.main(argv + ["--checkpoint-dir", str(out_dir)])
    (out_dir / "stdout.txt").write_text(log.getvalue())
    return json.loads((out_dir / "results.json").read_text())


def bert_throughput(config, *, batch: int, length: int, steps: int, dtype: str,
                    autotune: int | None) -> dict:
    """Train steps of a BERT classifier with random weights on random tokens: the first
    call's compile time, then the mean time of ``steps`` steps."""
    import jax
    import optax

    from jaxhw.experiment import device_name
    from jaxhw.models.bert import BertClassifier
    from jaxhw.train import Trainer
    from jaxhw.train.precision import compute_dtype
    from jaxhw.train.xla_options import gpu_compiler_options

    rng = np.random.default_rng(0)
    n = batch * steps
    ids = rng.integers(1000, config.vocab_size, (n, length)).astype(np.int32)
    mask = np.ones((n, length), np.int32)
    labels = rng.integers(0, 2, n).astype(np.int32)
    model = BertClassifier(config, dtype=compute_dtype(dtype))
    # As bert_imdb trains: dynamic loss scaling where the compute dtype is float16 (a T4).
    trainer = Trainer(model, optax.adamw(2e-5), log_every=steps,
                      compiler_options=gpu_compiler_options(autotune),
                      loss_scaling=compute_dtype(dtype) == np.float16)
    state = trainer.init_state(jax.random.key(0), (ids[:1], mask[:1]))
    data = trainer.put((ids, mask), labels)
    t0 = time.perf_counter()
    state, _ = trainer.train_epoch(state, data, batch, jax.random.key(1), progress=False)
    first = time.perf_counter() - t0 - trainer.setup_s  # the first block, compile excluded
    t1 = time.perf_counter()
    state, _ = trainer.train_epoch(state, data, batch, jax.random.key(2), progress=False)
    step_s = (time.perf_counter() - t1) / steps
    return {"device": device_name(), "dtype": compute_dtype(dtype).name,
            "compile_s": trainer.compile_s, "trace_s": trainer.trace_s,
            "first_step_s": trainer.setup_s + first / steps,
            "step_ms": 1000 * step_s, "throughput": batch / step_s, "unit": "sequences/s",
            "accuracy": None, "steps": steps, "examples_per_step": batch,
            "loss_scaling": trainer.loss_scaling}


def write_tiny_data(root: Path) -> None:
    """Random CIFAR-10, Fashion-MNIST and IMDB splits in the local layout (for --smoke)."""
    import gzip

    rng = np.random.default_rng(0)
    for name, shape in (("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 256), ("test", 64)):
            np.savez(root / name / f"{split}.npz",
                     images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                     labels=(np.arange(n) % 10).astype(np.uint8))
    (root / "imdb").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with gzip.open(root / "imdb" / f"{split}.jsonl.gz", "wt") as f:
            for i in range(100):
                word = "good" if i % 2 else "bad"
                f.write(json.dumps({"text": f"the movie was {word} {word}", "label": i % 2}) + "\n")


def plan(args, work: Path) -> list[tuple[str, Callable[[Path], dict]]]:
    """(row name, function of its output folder -> row) for every row, in order."""
    smoke, data = args.smoke, ["--data-dir", str(args.data_dir)]
    common = ["--dtype", args.dtype, "--compile-cache", args.compile_cache, "--overwrite"]
    rows: list[tuple[str, Callable[[Path], dict]]] = []

    def experiment(name, module, argv, unit, key="test_accuracy"):
        rows.append((name, lambda out: from_results(
            run_experiment(module, argv + common, out), unit, key)))

    tiny = ["--train-limit", "256", "--test-limit", "64"] if smoke else []
    experiment("cifar_betternet_gpu_preset", "cifar_inception",
               data + ["--preset", "gpu", "--epochs", "1" if smoke else "3"]
               + (["--batch-size", "64", "--widths", "16,32,64", "--stem", "8"] if smoke else [])
               + tiny, "images/s")
    experiment("cifar_betternet_cpu_preset", "cifar_inception",
               data + ["--epochs", "2" if smoke else "3"] + (["--batch-size", "64"] if smoke else [])
               + tiny, "images/s")
    experiment("vit_fashion_mnist", "vit_fashion_mnist",
               data + ["--preset", "best", "--epochs", "1" if smoke else "5"]
               + (["--batch-size", "64", "--embed-dim", "32"] if smoke else []) + tiny,
               "images/s")
    experiment("transformer_reverse", "transformer_toy",
               ["--task", "reverse", "--epochs", "1" if smoke else "2"]
               + (["--train-limit", "640", "--test-limit", "64", "--dim", "32", "--ffn-dim", "64",
                   "--layer-num", "1"] if smoke else []),
               "sequences/s", key="exact_sequence_accuracy")

    def demo(out):
        argv = ["--init", "torch", "--steps", "3" if smoke else "100"] + \
               (["--preset", "small", "--dim", "32", "--ffn-dim", "64"] if smoke else [])
        t0 = time.perf_counter()
        results = run_experiment("transformer_toy", argv + common, out)
        return {"device": results["device"], "dtype": results["dtype"],
                "compile_s": results["compile_s"], "trace_s": results["trace_s"],
                "step_ms": results["step_ms"],
                "throughput": results["config"]["batch_size"] / (results["step_ms"] / 1000),
                "unit": "sequences/s", "accuracy": None, "first_loss": results["first_loss"],
                "last_loss": results["last_loss"], "total_s": time.perf_counter() - t0}

    rows.append(("transformer_demo_torch_init", demo))

    def bert_minilm(out):
        model = args.bert_dir or ("minilm" if not smoke else str(work / "tiny_bert"))
        argv = data + ["--model", model, "--epochs", "1"] + (
            ["--train-limit", "96", "--val-limit", "32", "--test-limit", "64", "--max-len", "32",
             "--batch-size", "16"] if smoke else
            ["--train-limit", "4000", "--val-limit", "500", "--test-limit", "2000",
             "--max-len", "256", "--lr", "1e-4"])
        row = from_results(run_experiment("bert_imdb", argv + common, out), "sequences/s",
                           "test_accuracy")
        return {**row, "model": model}

    rows.append(("bert_imdb_minilm", bert_minilm))
    for level in args.bert_autotune:
        def bert_base(out, level=level):
            from transformers import BertConfig
            config = (BertConfig(vocab_size=1100, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64)
                      if smoke else BertConfig())
            row = bert_throughput(config, batch=8 if smoke else 32, length=32 if smoke else 256,
                                  steps=3 if smoke else 30, dtype=args.dtype, autotune=level)
            return {**row, "autotune_level": level}

        name = "bert_base_shaped_random" + ("" if level is None else f"_autotune{level}")
        rows.append((name, bert_base))
    return rows


def print_table(rows: list[dict]) -> None:
    fmt = lambda v: "-" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = [[fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    for r in rows:
        if r.get("error") or r.get("skipped"):
            print(f"{r['experiment']}: {r.get('error') or r.get('skipped')}")


@dataclasses.dataclass
class Config(Checked):
    data_dir: str | None = flag(None, "dataset folder in the local layout (see "
                                      "../shared/datasets/unpack.py); required unless --smoke")
    smoke: bool = flag(False, "toy sizes on data written to a temporary folder (seconds on a "
                              "CPU)")
    dtype: str = flag("auto", "compute dtype of every row (auto = bfloat16 on a GPU)",
                      choices=DTYPES)
    compile_cache: str | None = flag(None, "compilation cache folder (default: a new empty "
                                           "one, so compile times are cold; 'off' disables it)")
    bert_dir: str | None = flag(None, "a local BERT directory to fine-tune instead of --model "
                                      "minilm")
    bert_autotune: str = flag("0,default", "XLA GPU autotuning levels for the bert-base-shaped "
                                           "rows, one row each: 0 (off), 1-4, or default",
                              items=AUTOTUNE_LEVELS)
    only: str = flag("", "the rows to run", items=Items(names=ROW_NAMES, allow_empty=True))
    budget_s: float = flag(480.0, "rows that would start after this many seconds are skipped "
                                  "(480 s = 8 minutes)", gt=0)
    out: str = flag(str(OUT), "JSON output")

    def rules(self) -> None:
        if not self.smoke and not self.data_dir:
            raise ConfigError("--data-dir is required (or --smoke)")


def parse_args(argv=None) -> argparse.Namespace:
    """The checked flags, with ``bert_autotune`` as a list (None for XLA's default)."""
    args = argparse.Namespace(**dataclasses.asdict(config.parse(Config, __doc__, argv)))
    args.bert_autotune = [None if v == "default" else v
                          for v in AUTOTUNE_LEVELS.parse(args.bert_autotune)]
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="jaxhw-gpu-check-"))
    if args.compile_cache is None:
        args.compile_cache = str(work / "compile_cache")
    if args.smoke:
        args.data_dir = work / "data"
        write_tiny_data(args.data_dir)
        from tests.tiny import save_tiny_bert  # a random tiny BERT: the smoke run needs no hub
        save_tiny_bert(work / "tiny_bert", ["the", "movie", "was", "good", "bad"])
    only = {n for n in args.only.split(",") if n}  # names before any _autotune suffix
    rows, start = [], time.perf_counter()
    for name, run in plan(args, work):
        if only and name.split("_autotune")[0] not in only:
            continue
        row: dict[str, Any] = {"experiment": name}
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            row["skipped"] = f"budget of {args.budget_s:.0f} s spent ({elapsed:.0f} s)"
        else:
            print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                row.update(run(work / name))
            except (Exception, SystemExit) as e:  # one broken row must not hide the others
                row["error"] = f"{type(e).__name__}: {e}"
                (work / f"{name}.error.txt").write_text(traceback.format_exc())
            row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "smoke": args.smoke, "work_dir": str(work),
                               "total_s": time.perf_counter() - start}, indent=2))
    print(f"written: {out} (logs and checkpoints in {work})")
    return rows


if __name__ == "__main__":
    main()
