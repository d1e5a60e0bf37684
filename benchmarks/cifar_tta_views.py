"""Which test-time views to average: accuracy of several sets of views on trained networks.

    python -m benchmarks.cifar_tta_views --data-dir ~/.cache/jaxhw-data \\
        --runs RUN/seed_0,RUN/seed_1          # seed folders of cifar_inception runs

For every run (a ``--checkpoint-dir`` of ``python -m experiments.cifar_inception``, or one
``seed_<s>`` folder of a ``--seeds N`` run), the weights of its last epoch (those its final
evaluation used) give the logits of each of the 50 views of every test image once: the 25
shifts of up to 2 pixels in each direction (reflect padded, ``jaxhw.data.pipeline.grid_view``)
and the mirror of each. Each set of views in :data:`SETS` is then scored by the argmax of its
weighted mean of logits, so all sets see the same forward passes. On a CPU each view costs
one forward pass over the test set (about 3.5 s per 10,000 images on 2 cores).

Writes ``benchmarks/results/cifar_cpu_tta_views.json`` (``--out``) and a Markdown table next
to it: one row per set, one column per run, and their mean, with the host CPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxhw
from jaxhw import config, host
from jaxhw.config import Checked, ConfigError, flag
from jaxhw.data.pipeline import GRID_RADIUS, GRID_SHIFTS, grid_shift, grid_view, pad_images
from jaxhw.data.sources import load_split
from jaxhw.train.steps import eval_logits
from jaxhw.train.xla_options import cpu_conv_options

# A view: (row shift, column shift, mirrored); shifts in -2..2 pixels.
View = tuple[int, int, bool]


def _grid(radius: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)]


def _with_mirrors(shifts) -> dict[View, float]:
    return {(a, b, m): 1.0 for a, b in shifts for m in (False, True)}


PLUS_1 = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
# set name -> (what it is, weight of each view; weights are normalised)
SETS: dict[str, tuple[str, dict[View, float]]] = {
    "image": ("the image alone", {(0, 0, False): 1.0}),
    "mirror": ("the image and its mirror (2)", _with_mirrors([(0, 0)])),
    "airbench_6": ("airbench's six: image and mirror at 1/4, shifted 1 px down-right and "
                   "up-left with mirrors at 1/8 (the gpu preset)",
                   {**{v: 2.0 for v in _with_mirrors([(0, 0)])},
                    **_with_mirrors([(1, 1), (-1, -1)])}),
    "plus_1px_10": ("the image and its 1-pixel shifts up, down, left, right, with mirrors "
                    "(10)", _with_mirrors(PLUS_1)),
    "diagonal_1px_10": ("the image and its 4 diagonal 1-pixel shifts, with mirrors (10)",
                        _with_mirrors([(0, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)])),
    "plus_2px_10": ("the image and its 2-pixel shifts up, down, left, right, with mirrors "
                    "(10)", _with_mirrors([(2 * a, 2 * b) for a, b in PLUS_1])),
    "grid_1px_18": ("all 9 shifts of at most 1 pixel, with mirrors (18)",
                    _with_mirrors(_grid(1))),
    "grid_even_18": ("the 9 shifts of 0 or 2 pixels in each direction, with mirrors (18)",
                     _with_mirrors([(2 * a, 2 * b) for a, b in _grid(1)])),
    "plus_1_2px_18": ("the image and its 1- and 2-pixel shifts up, down, left, right, with "
                      "mirrors (18)", _with_mirrors(PLUS_1 + [(2 * a, 2 * b)
                                                             for a, b in PLUS_1[1:]])),
    "grid_2px_50": ("all 25 shifts of at most 2 pixels, with mirrors (50; the cpu preset)",
                    _with_mirrors(_grid(2))),
}


@dataclasses.dataclass
class Config(Checked):
    runs: str = flag("", "comma-separated run folders (a --checkpoint-dir of cifar_inception, "
                         "or a seed_<s> folder of a --seeds N run)")
    data_dir: str | None = flag(None, "dataset folder in the local layout (required)")
    limit: int = flag(0, "score the first N test images only (0: all 10,000)", ge=0)
    batch_size: int = flag(500, "test images per forward pass", ge=1)
    out: str = flag("benchmarks/results/cifar_cpu_tta_views.json", "JSON output (a Markdown "
                                                                   "table goes next to it)")

    def rules(self) -> None:
        if not self.data_dir:
            raise ConfigError("--data-dir is required")
        if not self.runs:
            raise ConfigError("--runs: name at least one run folder")
        missing = [r for r in self.runs.split(",") if not Path(r).expanduser().is_dir()]
        if missing:
            raise ConfigError(f"--runs: {', '.join(missing)} not found; pass the "
                              f"--checkpoint-dir of finished cifar_inception runs")


def view_logits(folder: Path, images: np.ndarray, batch_size: int
                ) -> dict[View, np.ndarray]:
    """Logits ``[N, classes]`` of each of the 50 views of ``images`` ``[N, 32, 32, 3]``
    (uint8), from the last epoch of the run in ``folder``."""
    predictor = jaxhw.load(folder)
    if not predictor.name.startswith("cifar_inception"):
        raise ConfigError(f"{folder} holds a {predictor.name} run, not cifar_inception")
    variables = predictor.variables  # the last epoch's: jaxhw.load's default
    inf = predictor.inference

    def logits(variables, x, k, mirror):
        x = inf.preprocess(jax.random.key(0), x, False)
        view = grid_view(pad_images(x, GRID_RADIUS), k)
        view = jnp.where(mirror, view[:, :, ::-1], view)
        return eval_logits(inf.model, variables, view, 0).astype(jnp.float32)

    forward = jax.jit(logits, compiler_options=cpu_conv_options(True))
    out = {}
    for k in range(GRID_SHIFTS):
        for mirror in (False, True):
            parts = [forward(variables, jnp.asarray(images[i:i + batch_size]), k, mirror)
                     for i in range(0, len(images), batch_size)]
            out[(*grid_shift(k), mirror)] = np.concatenate([np.asarray(p) for p in parts])
    return out


def set_logits(logits: dict[View, np.ndarray], name: str) -> np.ndarray:
    """The weighted mean ``[N, classes]`` of the logits of set ``name``'s views."""
    weights = SETS[name][1]
    return sum(w * logits[v] for v, w in weights.items()) / sum(weights.values())


def score(logits: dict[View, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Test accuracy (%) of every set of :data:`SETS` from the views' logits."""
    return {name: round(100 * float((set_logits(logits, name).argmax(-1) == labels).mean()), 2)
            for name in SETS}


def table(runs: list[str], scores: list[dict[str, float]]) -> str:
    lines = ["| views | " + " | ".join(f"`{r}`" for r in runs) + " | mean |",
             "| --- |" + " ---: |" * (len(runs) + 1)]
    for name, (what, _) in SETS.items():
        values = [s[name] for s in scores]
        lines.append(f"| `{name}`: {what} | " + " | ".join(f"{v:.2f} %" for v in values)
                     + f" | {np.mean(values):.2f} % |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = config.parse(Config, __doc__, argv)
    test = load_split("cifar10", "test", args.data_dir)
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    runs, scores, start = args.runs.split(","), [], time.perf_counter()
    for run in runs:
        scores.append(score(view_logits(Path(run).expanduser(), images, args.batch_size),
                            labels))
        print(f"[{time.perf_counter() - start:7.1f} s] {run}: {scores[-1]}", flush=True)
    result = {"runs": runs, "test_images": len(labels), "scores": scores,
              "sets": {n: what for n, (what, _) in SETS.items()},
              "host_cpu": host.cpu_name(), "host_cpu_flags": host.cpu_flags(),
              "total_s": time.perf_counter() - start}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(
        f"Test accuracy of sets of test-time views, {len(labels):,} CIFAR-10 test images; "
        f"host CPU {host.cpu_name()}, flags {' '.join(host.cpu_flags())}.\n\n"
        + table(runs, scores) + "\n")
    print(table(runs, scores))
    print(f"written: {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
