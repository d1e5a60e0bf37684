"""Ablation of the CIFAR-10 speed-run recipe: the gpu preset with each ingredient switched off.

    python -m benchmarks.cifar_ablation --data-dir ~/.cache/jaxhw-data --seeds 3   # a GPU
    python -m benchmarks.cifar_ablation --data-dir DIR --rows full,no_lookahead \\
        --extra "--train-limit 10000 --widths 32,64,64"                          # a CPU probe

Every row runs ``python -m experiments.cifar_inception --preset gpu --seeds N`` plus the
row's flags (and ``--extra``) in this process, and records the mean and standard deviation
of the test accuracy over the seeds, the mean training time per seed (compilation
excluded) and the compile time. Writes ``benchmarks/results/cifar_ablation.json`` and a
Markdown table next to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shlex
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_check import run_experiment
from experiments import cifar_inception
from jaxhw import config
from jaxhw.config import Checked, ConfigError, Items, build_parser, flag

OUT = Path("benchmarks/results/cifar_ablation.json")

# row name -> (what it changes, flags added to --preset gpu)
ROWS: dict[str, tuple[str, list[str]]] = {
    "full": ("the gpu preset as it is", []),
    "no_whiten": ("3x3 conv + BN stem and a 2x2 pool instead of the frozen whitening stem",
                  ["--no-whiten", "--stem", "32"]),
    "no_lookahead": ("no lookahead weight averaging", ["--no-lookahead"]),
    "no_bn_bias_lr": ("batch-norm biases at the base learning rate (not 64x)",
                      ["--bn-bias-lr", "1"]),
    "no_label_smoothing": ("label smoothing 0 instead of 0.2", ["--label-smoothing", "0"]),
    "random_flip": ("random flips instead of alternating ones", ["--no-alternate-flip"]),
    "no_translate": ("no 2-pixel translations while training", ["--crop-pad", "0"]),
    "tta_mirror_only": ("2 test-time views (image, mirror) instead of 6",
                        ["--no-tta-translate"]),
    "no_tta": ("no test-time augmentation", ["--no-tta"]),
    "relu": ("ReLU instead of GELU", ["--act", "relu"]),
    "bn_defaults": ("PyTorch's batch-norm defaults (momentum 0.9 here, eps 1e-5, learned "
                    "scale)", ["--bn-momentum", "0.9", "--bn-eps", "1e-5", "--bn-scale"]),
    "stride_blocks": ("stride-2 residual blocks instead of compute-then-pool stages",
                      ["--downsample", "stride"]),
    "narrow": ("widths 64,192,192 instead of 64,256,256 (faster, less accurate?)",
               ["--widths", "64,192,192"]),
    "float32": ("float32 instead of bfloat16 (on a GPU)", ["--dtype", "float32"]),
}


def run_row(name: str, args: "Config", work: Path) -> dict:
    change, flags = ROWS[name]
    argv = (["--preset", "gpu", "--seeds", str(args.seeds), "--data-dir", str(args.data_dir),
             "--compile-cache", args.compile_cache, "--overwrite"] + flags
            + shlex.split(args.extra))
    results = run_experiment("cifar_inception", argv, work / name)
    if "seeds" in results:  # several seeds: train_and_evaluate's summary
        seeds, mean, std = results["seeds"], results["mean_accuracy"], results["std_accuracy"]
    else:
        seeds = [{"seed": results["seed"], "train_s": results["train_s"],
                  "compile_s": results["compile_s"]}]
        mean, std = results["test_accuracy"], 0.0
    return {"row": name, "change": change, "flags": flags, "mean_accuracy": mean,
            "std_accuracy": std, "seeds": len(seeds),
            "mean_train_s": sum(s["train_s"] for s in seeds) / len(seeds),
            "compile_s": seeds[0]["compile_s"], "device": results["device"],
            "dtype": results["dtype"]}


def table(rows: list[dict]) -> str:
    lines = ["| row | change | mean test accuracy | std | seeds | training s per seed | "
             "compile s | device, dtype |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['row']} | {ROWS[r['row']][0]} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['row']} | {r['change']} | {100 * r['mean_accuracy']:.2f} % | "
                     f"{100 * r['std_accuracy']:.2f} | {r['seeds']} | {r['mean_train_s']:.2f} | "
                     f"{r['compile_s']:.1f} | {r['device']}, {r['dtype']} |")
    return "\n".join(lines)


@dataclasses.dataclass
class Config(Checked):
    data_dir: str | None = flag(None, "dataset folder in the local layout (required)")
    seeds: int = flag(3, "seeds per row", ge=1, le=1000)
    rows: str = flag(",".join(ROWS), "the rows to run", items=Items(names=tuple(ROWS)))
    extra: str = flag("", "flags added to every row, e.g. \"--train-limit 10000 --epochs 3\" "
                          "for a short probe (checked against cifar_inception's flags first)")
    compile_cache: str | None = flag(None, "compilation cache folder (default: a new one "
                                           "under the work folder)")
    out: str = flag(str(OUT), "JSON output")

    def rules(self) -> None:
        if not self.data_dir:
            raise ConfigError("--data-dir is required")
        try:
            extra = shlex.split(self.extra)
        except ValueError as e:
            raise ConfigError(f"--extra: {e}") from None
        for name in self.rows.split(","):  # every row's flags, as cifar_inception checks them
            argv = ["--preset", "gpu", "--seeds", str(self.seeds), *ROWS[name][1], *extra]
            parser = build_parser(cifar_inception.Config, "", cifar_inception.PRESETS)
            said = io.StringIO()
            try:
                with contextlib.redirect_stderr(said):
                    values = vars(parser.parse_args(argv))
            except SystemExit:
                why = said.getvalue().strip().split("error: ", 1)[-1].removesuffix(" (see --help)")
                raise ConfigError(f"--extra {self.extra!r}: {why}") from None
            preset = values.pop("preset")
            try:
                cifar_inception.Config(**{**cifar_inception.PRESETS[preset], **values})
            except ConfigError as e:
                raise ConfigError(f"row {name} with --extra {self.extra!r}: {e}") from None


def main(argv=None) -> list[dict]:
    args = config.parse(Config, __doc__, argv)
    names = args.rows.split(",")
    work = Path(tempfile.mkdtemp(prefix="jaxhw-cifar-ablation-"))
    args = dataclasses.replace(args, compile_cache=args.compile_cache
                               or str(work / "compile_cache"))
    rows, start = [], time.perf_counter()
    for name in names:
        print(f"[{time.perf_counter() - start:7.1f} s] {name}: {ROWS[name][0]}", flush=True)
        try:
            rows.append(run_row(name, args, work))
        except (Exception, SystemExit) as e:  # one broken row must not hide the others
            rows.append({"row": name, "error": f"{type(e).__name__}: {e}"})
        out = Path(args.out)  # written after every row: an interrupted run keeps its rows
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows, "extra": args.extra, "seeds": args.seeds,
                                   "total_s": time.perf_counter() - start}, indent=2))
        out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))
    print(f"written: {args.out} and {Path(args.out).with_suffix('.md')} (logs in {work})")
    return rows


if __name__ == "__main__":
    main()
