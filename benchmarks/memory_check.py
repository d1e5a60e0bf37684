"""Device memory of a BERT notebook's train step, from XLA's memory analysis (no GPU needed).

    python -m benchmarks.memory_check                      # the BERT notebook's defaults, a T4
    python -m benchmarks.memory_check --args "--model minilm --max-len 512 --batch-size 32"

Builds the experiment's classifier for the given ``bert_imdb`` flags (by default the
``GPU_ARGS`` of ``experiments/notebooks/bert_imdb.ipynb``), compiles one train block on
the current backend without running it, and reports what XLA says the compiled program
holds: arguments (parameters, AdamW state, the training reviews on the device), outputs,
donated (aliased) bytes, temporaries, and their peak. ``bert-base-uncased`` is built from
transformers' ``BertConfig()`` (its exact shape) with random weights, so no download is
needed. Writes ``benchmarks/results/memory_check.json``.

``--target t4`` (the default) measures in the dtype ``--dtype auto`` picks on a T4 (compute
capability 7.5: float16, with loss scaling) against what a free Colab T4 leaves a
program: JAX preallocates 75 % of its 15 GiB, less 1 GiB of margin for cuDNN's workspaces
and the runtime, 10.25 GiB. ``--target here`` uses the present device's dtype.

On a CPU the figure is XLA's CPU buffer assignment, an estimate of a GPU's: the same
program, but a GPU compiler fuses and schedules differently.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import nbformat
import numpy as np

from jaxhw import config
from jaxhw.config import Checked, flag

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "notebooks" / "bert_imdb.ipynb"
OUT = Path("benchmarks/results/memory_check.json")


def notebook_args(path: Path = NOTEBOOK) -> list[str]:
    """The GPU recipe (``GPU_ARGS``) of a notebook's parameters cell: what it trains on a
    GPU runtime unless ``BERT_ARGS`` says otherwise."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    scope: dict = {}
    exec(cell.source, scope)  # the cell only assigns constants
    return list(scope["GPU_ARGS"] if scope.get("BERT_ARGS") is None else scope["BERT_ARGS"])


def bert_config(model: str):
    from transformers import AutoConfig, BertConfig

    if model == "bert-base-uncased":
        return BertConfig()  # bert-base-uncased's architecture (768 wide, 12 layers, 30,522 words)
    from jaxhw.pretrained import resolve
    source, local_only = resolve(model)
    return AutoConfig.from_pretrained(source, local_files_only=local_only)


# Targets: (a stand-in for the device --dtype auto looks at, the memory budget in GiB).
T4_BUDGET_GIB = 0.75 * 15 - 1  # JAX's default pool (75 %) of a T4's 15 GiB, less 1 GiB
TARGETS = {"t4": ("7.5", T4_BUDGET_GIB), "here": (None, 12.0)}


def _target_device(capability: str | None):
    from types import SimpleNamespace

    import jax
    if capability is None:
        return jax.devices()[0]
    return SimpleNamespace(platform="gpu", compute_capability=capability)


def train_memory(trainer, state, data: dict, batch_size: int) -> dict[str, int]:
    """XLA's memory analysis of ``trainer``'s compiled train block for batches of
    ``batch_size`` drawn from ``data`` (one bucket), in bytes: ``arguments`` (state,
    dataset, batch indices), ``outputs``, ``aliased`` (outputs written into donated
    arguments), ``temporaries``, and ``peak`` = arguments + outputs - aliased +
    temporaries, what the device must hold while the block runs. The block has the length
    the run compiles (:func:`jaxhw.train.loop.balanced_block`). Compiles without running
    anything."""
    from jaxhw.train import replicate
    from jaxhw.train.loop import balanced_block
    rows = batch_size * trainer.accumulate  # per optimizer step
    count = len(data["y"]) // rows
    if trainer.block is None:
        trainer.block = trainer.choose_block([count])
    length = balanced_block(count, trainer.block)  # the block length the run compiles
    batches = np.zeros((length, rows), np.int32)
    compiled = trainer.block_fn(length).lower(
        state, data, replicate(batches, trainer.mesh), np.int32(0), np.int32(length)).compile()
    m = compiled.memory_analysis()
    stats = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
             "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes}
    stats["peak"] = (stats["arguments"] + stats["outputs"] - stats["aliased"]
                     + stats["temporaries"])
    return stats


def measure(argv: list[str], train_reviews: int = 15000, target: str = "here") -> dict:
    """Memory of one train block for the ``bert_imdb`` flags ``argv``: every training review
    in one bucket at ``--max-len`` (the largest shape the run compiles), in the dtype
    ``--dtype`` gives on ``target``'s device."""
    import jax

    from experiments import bert_imdb
    from jaxhw import config
    from jaxhw.experiment import device_name
    from jaxhw.models.bert import BertClassifier
    from jaxhw.train import Trainer
    from jaxhw.train.loop import balanced_block
    from jaxhw.train.precision import compute_dtype
    from jaxhw.train.xla_options import analysis_options

    cfg = config.parse(bert_imdb.Config, "", argv, bert_imdb.PRESETS)
    dtype = compute_dtype(cfg.dtype, _target_device(TARGETS[target][0]))
    bert = bert_config(cfg.model)
    model = BertClassifier(bert, cfg.head, cfg.head_hidden, cfg.head_dropout, dtype=dtype)
    n = cfg.train_limit or train_reviews
    steps = cfg.epochs * bert_imdb.optimizer_steps(cfg, n)
    trainer = Trainer(model, bert_imdb.make_optimizer(cfg, steps), accumulate=cfg.accumulate,
                      steps_per_call=cfg.steps_per_call, loss_scaling=dtype == np.float16,
                      compiler_options=analysis_options())  # compiled, never run
    ids = np.ones((n, cfg.max_len), np.int32)
    # Only the state's shapes matter to the compiler: no 110 M random weights are drawn.
    state = jax.eval_shape(lambda: trainer.init_state(jax.random.key(0), (ids[:1], ids[:1])))
    data = trainer.put((ids, ids), np.zeros(n, np.int32))
    stats = train_memory(trainer, state, data, cfg.batch_size)
    return {"args": argv, "target": target, "model": cfg.model, "dtype": dtype.name,
            "max_len": cfg.max_len, "batch_size": cfg.batch_size,
            "accumulate": cfg.accumulate, "steps_per_call": trainer.block,
            "block_length": balanced_block(n // (cfg.batch_size * cfg.accumulate),
                                           trainer.block),
            "train_reviews_on_device": n, "device": device_name(),
            **{f"{k}_bytes": v for k, v in stats.items()}, "peak_gib": stats["peak"] / 2 ** 30}


@dataclasses.dataclass
class Config(Checked):
    args: str | None = flag(None, "bert_imdb flags to measure (default: the GPU_ARGS of "
                                  "experiments/notebooks/bert_imdb.ipynb)")
    target: str = flag("t4", "the device to measure for: t4 (float16 under --dtype auto, "
                             f"budget {T4_BUDGET_GIB:g} GiB) or here (this device's dtype, "
                             "budget 12 GiB)", choices=tuple(TARGETS))
    limit_gib: float | None = flag(None, "report whether the peak stays under this many GiB "
                                         "(default: the target's budget)", gt=0)
    out: str = flag(str(OUT), "JSON output")


def main(argv=None) -> dict:
    args = config.parse(Config, __doc__, argv)
    flags = shlex.split(args.args) if args.args is not None else notebook_args()
    row = measure(flags, target=args.target)
    limit = args.limit_gib or TARGETS[args.target][1]
    row["limit_gib"], row["fits"] = limit, row["peak_gib"] < limit
    print(f"{' '.join(flags)}\n  on {row['device']}: arguments {row['arguments_bytes'] / 2**30:.2f} "
          f"GiB, outputs {row['outputs_bytes'] / 2**30:.2f} GiB (aliased "
          f"{row['aliased_bytes'] / 2**30:.2f}), temporaries {row['temporaries_bytes'] / 2**30:.2f} "
          f"GiB -> peak {row['peak_gib']:.2f} GiB ({'under' if row['fits'] else 'OVER'} "
          f"{limit:g} GiB, target {args.target}, {row['dtype']})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    return row


if __name__ == "__main__":
    main()
