"""Work per example of every experiment's presets: XLA's count of a forward pass.

    python -m benchmarks.flops            # writes benchmarks/results/flops.json

Each row is ``{"experiment", "preset", "gflop_per_example"}``: the floating-point operations
of one example's forward pass (batch 1, evaluation mode, float32), from XLA's cost analysis
of the compiled program, for the model the preset trains (``predictor(cfg)``, the record
``jaxhw.load`` rebuilds). Sequence models count one example at the preset's lengths. The row
``airbench94_reference`` counts a Flax net shaped as airbench94 (2x2 whitening conv, three
groups of conv - pool - BN - GELU - conv - BN - GELU at 64, 256 and 256 channels, a max pool
and a bias-free linear head) the same way. A preset whose model cannot be built here (a
pre-trained BERT that is not installed) is a row with its error.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxhw import config
from jaxhw.config import Checked, Items, flag

OUT = Path("benchmarks/results/flops.json")
# experiment module -> its presets (None: the flags' defaults)
EXPERIMENTS = {
    "cifar_simple_cnn": [None],
    "cifar_inception": ["cpu", "gpu"],
    "vit_fashion_mnist": ["best", "fast", "student", "gpu", "original"],
    "transformer_toy": ["original", "small"],
    "bert_imdb": ["cpu", "gpu"],
}


class AirbenchGroup(nn.Module):
    """airbench94's ConvGroup: conv3x3 - max pool 2 - BN - GELU - conv3x3 - BN - GELU."""

    width: int

    @nn.compact
    def __call__(self, x):
        conv = lambda: nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False)  # noqa: E731
        norm = lambda: nn.BatchNorm(use_running_average=True, use_scale=False)  # noqa: E731
        x = nn.max_pool(conv()(x), (2, 2), strides=(2, 2))
        x = nn.gelu(norm()(x))
        return nn.gelu(norm()(conv()(x)))


class Airbench94(nn.Module):
    """airbench94's network: ``[B, 32, 32, 3]`` -> logits ``[B, 10]``."""

    widths: tuple[int, int, int] = (64, 256, 256)

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Conv(24, (2, 2), padding="VALID")(x))          # [B, 31, 31, 24]
        for width in self.widths:
            x = AirbenchGroup(width)(x)                                 # 15, 7, 3
        x = nn.max_pool(x, (3, 3), strides=(3, 3)).reshape(x.shape[0], -1)
        return nn.Dense(10, use_bias=False)(x) / 9


def forward_gflop(model: nn.Module, inputs: list[jax.ShapeDtypeStruct]) -> float:
    """XLA's floating-point operations of ``model.apply(variables, *inputs)`` (compiled,
    shapes only: nothing is initialised or run), in GFLOP."""
    variables = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    compiled = jax.jit(lambda v, *a: model.apply(v, *a)).lower(variables, *inputs).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / 1e9


def record_inputs(record: dict) -> list[jax.ShapeDtypeStruct]:
    """One example's model inputs for a predictor record (``jaxhw.inference``)."""
    if record["kind"] == "image":
        return [jax.ShapeDtypeStruct((1, *record["image_shape"]), jnp.float32)]
    if record["kind"] == "text":
        tokens = jax.ShapeDtypeStruct((1, record["max_len"]), jnp.int32)
        return [tokens, tokens]
    return [jax.ShapeDtypeStruct((1, record["seq_len"]), jnp.int32),
            jax.ShapeDtypeStruct((1, record["max_len"] - 1), jnp.int32)]


def preset_row(experiment: str, preset: str | None) -> dict:
    from jaxhw import inference
    module = importlib.import_module(f"experiments.{experiment}")
    argv = ["--dtype", "float32"] + (["--preset", preset] if preset else [])
    cfg = config.parse(module.Config, "", argv, getattr(module, "PRESETS", None))
    row = {"experiment": experiment, "preset": preset or "default"}
    try:
        record = module.predictor(cfg)
        model = inference.build(record).model
        row["gflop_per_example"] = forward_gflop(model, record_inputs(record))
    except Exception as e:  # noqa: BLE001  (a row that cannot be counted says why)
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def reference_row() -> dict:
    inputs = [jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)]
    return {"experiment": "airbench94_reference", "preset": None,
            "gflop_per_example": forward_gflop(Airbench94(), inputs)}


@dataclasses.dataclass
class Config(Checked):
    only: str = flag("", "experiments to count, comma-separated (default: all)",
                     items=Items(names=tuple(EXPERIMENTS), allow_empty=True))
    out: str = flag(str(OUT), "JSON output")


def main(argv=None) -> list[dict]:
    args = config.parse(Config, __doc__, argv)
    names = [n for n in args.only.split(",") if n] or list(EXPERIMENTS)
    rows = [preset_row(e, p) for e in names for p in EXPERIMENTS[e]] + [reference_row()]
    reference = rows[-1]["gflop_per_example"]
    for r in rows:
        value = r.get("gflop_per_example")
        shown = f"{value:10.4f} GFLOP" if value is not None else f"error: {r['error']}"
        ratio = (f"  ({value / reference:.2f}x airbench94)"
                 if value is not None and r["experiment"].startswith("cifar") else "")
        print(f"{r['experiment']:>22} {str(r['preset']):>9}: {shown}{ratio}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {out}")
    return rows


if __name__ == "__main__":
    main()
