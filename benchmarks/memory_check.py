"""Device memory of a BERT notebook's train step, from XLA's memory analysis (no GPU needed).

    python -m benchmarks.memory_check                      # the BERT notebook's defaults
    python -m benchmarks.memory_check --args "--model minilm --max-len 512 --batch-size 32"

Builds the experiment's classifier for the given ``bert_imdb`` flags (by default the
``BERT_ARGS`` of ``experiments/notebooks/bert_imdb.ipynb``), compiles one train block on
the current backend without running it, and reports what XLA says the compiled program
holds: arguments (parameters, AdamW state, the training reviews on the device), outputs,
donated (aliased) bytes, temporaries, and their peak. ``bert-base-uncased`` is built from
transformers' ``BertConfig()`` (its exact shape) with random weights, so no download is
needed. Writes ``benchmarks/results/memory_check.json``.

On a CPU the figure is XLA's CPU buffer assignment, an estimate of a GPU's: the same
program, but a GPU compiler fuses and schedules differently.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import nbformat
import numpy as np

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "notebooks" / "bert_imdb.ipynb"
OUT = Path("benchmarks/results/memory_check.json")


def notebook_args(path: Path = NOTEBOOK) -> list[str]:
    """The ``BERT_ARGS`` list of a notebook's parameters cell."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(cell.source, scope)  # the cell only assigns constants
    return list(scope["BERT_ARGS"])


def bert_config(model: str):
    from transformers import AutoConfig, BertConfig

    if model == "bert-base-uncased":
        return BertConfig()  # bert-base-uncased's architecture (768 wide, 12 layers, 30,522 words)
    from jaxhw.models.bert import resolve
    source, local_only = resolve(model)
    return AutoConfig.from_pretrained(source, local_files_only=local_only)


def measure(argv: list[str], train_reviews: int = 15000) -> dict:
    """Memory of one train block for the ``bert_imdb`` flags ``argv``: every training review
    in one bucket at ``--max-len`` (the largest shape the run compiles)."""
    import jax

    from experiments import bert_imdb
    from jaxhw import config
    from jaxhw.experiment import device_name
    from jaxhw.models.bert import BertClassifier
    from jaxhw.train import Trainer
    from jaxhw.train.precision import compute_dtype

    cfg = config.parse(bert_imdb.Config, "", argv, bert_imdb.PRESETS)
    dtype = compute_dtype(cfg.dtype)
    bert = bert_config(cfg.model)
    model = BertClassifier(bert, cfg.head, cfg.head_hidden, cfg.head_dropout, dtype=dtype)
    n = cfg.train_limit or train_reviews
    trainer = Trainer(model, bert_imdb.make_optimizer(cfg, cfg.epochs * (n // cfg.batch_size)),
                      steps_per_call=cfg.steps_per_call)
    ids = np.ones((n, cfg.max_len), np.int32)
    state = trainer.init_state(jax.random.key(0), (ids[:1], ids[:1]))
    data = trainer.put((ids, ids), np.zeros(n, np.int32))
    stats = trainer.train_memory(state, data, cfg.batch_size)
    return {"args": argv, "model": cfg.model, "dtype": dtype.name, "max_len": cfg.max_len,
            "batch_size": cfg.batch_size, "steps_per_call": trainer.block,
            "train_reviews_on_device": n, "device": device_name(),
            **{f"{k}_bytes": v for k, v in stats.items()}, "peak_gib": stats["peak"] / 2 ** 30}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--args", default=None, help="bert_imdb flags to measure (default: the "
                   "BERT_ARGS of experiments/notebooks/bert_imdb.ipynb)")
    p.add_argument("--limit-gib", type=float, default=12.0,
                   help="report whether the peak stays under this (default: 12, for a 15 GB "
                        "Colab T4)")
    p.add_argument("--out", default=str(OUT), help=f"JSON output (default: {OUT})")
    args = p.parse_args(argv)
    flags = shlex.split(args.args) if args.args is not None else notebook_args()
    row = measure(flags)
    row["limit_gib"], row["fits"] = args.limit_gib, row["peak_gib"] < args.limit_gib
    print(f"{' '.join(flags)}\n  on {row['device']}: arguments {row['arguments_bytes'] / 2**30:.2f} "
          f"GiB, outputs {row['outputs_bytes'] / 2**30:.2f} GiB (aliased "
          f"{row['aliased_bytes'] / 2**30:.2f}), temporaries {row['temporaries_bytes'] / 2**30:.2f} "
          f"GiB -> peak {row['peak_gib']:.2f} GiB ({'under' if row['fits'] else 'OVER'} "
          f"{args.limit_gib:g} GiB)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    return row


if __name__ == "__main__":
    main()
