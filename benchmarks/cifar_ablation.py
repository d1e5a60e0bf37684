"""Ablation of a cifar_inception preset (gpu or cpu): each ingredient switched off, and for
the cpu preset, the gpu preset's others switched on.

    python -m benchmarks.cifar_ablation --data-dir ~/.cache/jaxhw-data --seeds 3   # a GPU
    python -m benchmarks.cifar_ablation --preset cpu --data-dir DIR --seeds 1 --work DIR2

Every row runs ``python -m experiments.cifar_inception --preset P --seeds N`` plus its flags
(and ``--extra``) and records the test accuracy over the seeds (mean, std), the training time
per seed, the final evaluation's and the compile time. Rows that change only the test-time
views evaluate a copy of the full row's checkpoints. Finished rows in ``--work`` are not run
again; ``--full-run`` adopts a finished cifar_inception run as the full row. A call adds its
rows to the table in ``--out`` (default ``benchmarks/results/cifar_[cpu_]ablation.json``
and a Markdown table beside it), which only rows of the same setting and CPU share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.gpu_check import run_experiment
from experiments import cifar_inception
from jaxhw import config, host
from jaxhw.config import Checked, ConfigError, Items, build_parser, flag

RESULTS = Path("benchmarks/results")
OUT = {"gpu": RESULTS / "cifar_ablation.json", "cpu": RESULTS / "cifar_cpu_ablation.json"}


@dataclasses.dataclass(frozen=True)
class Row:
    change: str               # what the row changes, for the table
    flags: tuple[str, ...]    # added to --preset P
    eval_only: bool = False   # only the evaluation changes: evaluate the full row's weights


# preset -> row name -> Row
ROWS: dict[str, dict[str, Row]] = {
    "gpu": {
        "full": Row("the gpu preset as it is", ()),
        "no_whiten": Row("a trained 3x3 conv + BN stem (32 filters) at 32x32 instead of the "
                         "frozen whitening stem", ("--no-whiten", "--stem", "32")),
        "no_lookahead": Row("no lookahead weight averaging", ("--no-lookahead",)),
        "no_bn_bias_lr": Row("batch-norm biases at the base learning rate (not 64x)",
                             ("--bn-bias-lr", "1")),
        "no_label_smoothing": Row("label smoothing 0 instead of 0.2",
                                  ("--label-smoothing", "0")),
        "random_flip": Row("random flips instead of alternating ones",
                           ("--no-alternate-flip",)),
        "no_translate": Row("no 2-pixel translations while training", ("--crop-pad", "0")),
        "tta_mirror_only": Row("2 test-time views (image, mirror) instead of 6",
                               ("--tta", "mirror")),
        "no_tta": Row("no test-time augmentation", ("--tta", "none")),
        "relu": Row("ReLU instead of GELU", ("--act", "relu")),
        "bn_defaults": Row("PyTorch's batch-norm defaults (momentum 0.9 here, eps 1e-5, "
                           "learned scale)", ("--bn-momentum", "0.9", "--bn-eps", "1e-5",
                                              "--bn-scale")),
        "stride_layout": Row("the stride layout: a 2x2 pool before the Inception module (96), "
                             "a ResidualBlock at 15x15, stride-2 blocks to 8x8 and 4x4 (256)",
                             ("--downsample", "stride", "--widths", "96,256,256",
                              "--blocks", "1,1,1")),
        "epochs_10": Row("10 epochs instead of 12 (about airbench94's 9.9)", ("--epochs", "10")),
        "float32": Row("float32 instead of bfloat16 (on a GPU)", ("--dtype", "float32")),
    },
    # The cpu preset: its size, epochs and label smoothing changed, each speed-run
    # ingredient it has switched off, then the three it does not have switched on.
    "cpu": {
        "full": Row("the cpu preset as it is", ()),
        "tta_six_views": Row("airbench's 6 test-time views (image, mirror, 1-pixel shifts) "
                             "instead of 50", ("--tta", "six"), eval_only=True),
        "tta_mirror_only": Row("2 test-time views (image, mirror) instead of 50",
                               ("--tta", "mirror"), eval_only=True),
        "no_tta": Row("no test-time augmentation", ("--tta", "none"), eval_only=True),
        "epochs_12": Row("12 epochs instead of 14", ("--epochs", "12")),
        "epochs_16": Row("16 epochs instead of 14", ("--epochs", "16")),
        "label_smoothing_0.1": Row("label smoothing 0.1 instead of 0",
                                   ("--label-smoothing", "0.1")),
        "wide_stages": Row("stages of 64,128,256 channels instead of 64,96,192, 12 epochs "
                           "and label smoothing 0.1",
                      ("--widths", "64,128,256", "--epochs", "12", "--label-smoothing", "0.1")),
        "no_whiten": Row("the trained 3x3 conv + BN stem at 32x32 and a 2x2 pool instead of "
                         "the frozen whitening stem", ("--no-whiten",)),
        "random_flip": Row("random flips instead of alternating ones", ("--no-alternate-flip",)),
        "pad_4": Row("4-pixel zero-padded crops instead of 2-pixel reflected ones",
                     ("--crop-pad", "4", "--crop-mode", "constant")),
        "lookahead": Row("lookahead weight averaging", ("--lookahead",)),
        "label_smoothing_0.2": Row("label smoothing 0.2 instead of 0",
                                   ("--label-smoothing", "0.2")),
        "fast_bn_biases": Row("no batch-norm scale and 64x the learning rate on batch-norm "
                              "biases (the gpu preset's)", ("--no-bn-scale", "--bn-bias-lr", "64")),
    },
}
ALL_ROWS = tuple(dict.fromkeys(name for rows in ROWS.values() for name in rows))
# Config entries that say where a run keeps its files or what it prints, not what it trains.
RUN_PLACES = ("data_dir", "checkpoint_dir", "compile_cache", "overwrite", "resume",
              "evaluate", "print_every")


def row_argv(name: str, args: "Config") -> list[str]:
    """The cifar_inception command line of row ``name`` (without --checkpoint-dir)."""
    row = ROWS[args.preset][name]
    return (["--preset", args.preset, "--seeds", str(args.seeds), "--data-dir",
             str(args.data_dir), "--compile-cache", args.compile_cache]
            + (["--evaluate"] if row.eval_only else ["--overwrite"])
            + list(row.flags) + shlex.split(args.extra))


def _trained(config_: dict) -> dict:
    return {k: v for k, v in config_.items() if k not in RUN_PLACES}


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _seed_rows(results: dict) -> list[dict]:
    """Each seed's training and compile time, of a one-seed or a several-seed run."""
    if "seeds" in results:
        return results["seeds"]
    return [{"seed": results["seed"], "train_s": results["train_s"],
             "compile_s": results["compile_s"]}]


def _row_values(argv: list[str]) -> dict:
    """cifar_inception's Config fields for ``argv``, parsed and merged with its preset as
    cifar_inception does; a flag its parser refuses is a one-line ConfigError."""
    parser = build_parser(cifar_inception.Config, "", cifar_inception.PRESETS)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            values = vars(parser.parse_args(argv))
    except SystemExit:
        why = said.getvalue().strip().split("error: ", 1)[-1].removesuffix(" (see --help)")
        raise ConfigError(why) from None
    return {**cifar_inception.PRESETS[values.pop("preset")], **values}


def run_row(name: str, args: "Config", work: Path) -> dict:
    row = ROWS[args.preset][name]
    argv, folder = row_argv(name, args), work / name
    stamp = folder / "row.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("argv") == argv:
        print(f"    kept from {folder}", flush=True)
        results = _results(folder)
    else:
        if row.eval_only:  # evaluate a copy: --evaluate rewrites the folder's results
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(work / "full", folder)
            (folder / "row.json").unlink(missing_ok=True)
        results = run_experiment("cifar_inception", argv, folder)
        stamp.write_text(json.dumps({"argv": argv}))
    several = "seeds" in results  # several seeds: train_and_evaluate's summary
    seeds = _seed_rows(results)
    if several:
        mean, std = results["mean_accuracy"], results["std_accuracy"]
        final_eval = [_results(folder / f"seed_{s['seed']}")["final_eval_s"] for s in seeds]
    else:
        mean, std, final_eval = results["test_accuracy"], 0.0, [results["final_eval_s"]]
    if row.eval_only:  # nothing trained: the training is the full row's
        seeds = _seed_rows(_results(work / "full"))
    return {"row": name, "change": row.change, "flags": list(row.flags),
            "eval_only": row.eval_only, "mean_accuracy": mean, "std_accuracy": std,
            "seeds": len(seeds), "mean_train_s": sum(s["train_s"] for s in seeds) / len(seeds),
            "final_eval_s": sum(final_eval) / len(final_eval),
            "compile_s": seeds[0]["compile_s"], "device": results["device"],
            "dtype": results["dtype"]}


def adopt_full_run(run: Path, args: "Config", work: Path) -> None:
    """Make the finished run in ``run`` the full row: its config must be the one the full
    row would train (where files are kept aside). With ``--seeds 1``, ``run`` may be one
    ``seed_<s>`` folder of a several-seed run of the row's seed."""
    if not (run / "results.json").exists():
        raise ConfigError(f"--full-run {run}: no results.json there; give the folder of a "
                          f"finished python -m experiments.cifar_inception run")
    results = _results(run)
    saved = _trained(results["config"])
    want = dataclasses.asdict(cifar_inception.Config(**_row_values(row_argv("full", args))))
    if "history" in results and args.seeds == 1:  # one seed's folder: the seed counts
        saved = {**saved, "seed": results["seed"], "seeds": 1}
    differ = sorted(k for k, v in _trained(want).items() if saved.get(k) != v)
    if differ:
        raise ConfigError(f"--full-run {run} trained another config than --preset "
                          f"{args.preset}'s full row: {', '.join(differ)} differ")
    shutil.rmtree(work / "full", ignore_errors=True)
    shutil.copytree(run, work / "full")
    (work / "full" / "row.json").write_text(json.dumps({"argv": row_argv("full", args),
                                                        "adopted_from": str(run)}))


TABLE_START = "Rows of --preset "  # the Markdown table's first line; text above it is kept


def earlier_rows(out: Path, setting: dict) -> tuple[list[dict], str]:
    """The rows already in ``out`` and the Markdown text above their table, to add this
    call's rows to. ``setting``: this call's preset, seeds, extra and host CPU, which the
    file's must equal (rows of another setting do not compare); a one-line ConfigError
    otherwise, or when ``out`` is not an ablation table."""
    if not out.exists():
        return [], ""
    try:
        saved = json.loads(out.read_text())
        rows = saved["rows"]
        theirs = {k: saved[k] for k in setting}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"--out {out}: not an ablation table ({type(e).__name__}: {e}); "
                          f"pass another --out, or --fresh to replace it") from None
    differ = [f"{k} {theirs[k]!r} (this call: {setting[k]!r})"
              for k in setting if theirs[k] != setting[k]]
    if differ:
        raise ConfigError(f"--out {out} holds rows of another setting: {'; '.join(differ)}; "
                          f"pass another --out, or --fresh to replace them")
    md = out.with_suffix(".md")
    text = md.read_text() if md.exists() else ""
    return rows, text[:text.index(TABLE_START)] if TABLE_START in text else ""


def merge_rows(earlier: list[dict], new: list[dict], preset: str) -> list[dict]:
    """``earlier`` with ``new``'s rows added, a new row replacing the earlier one of its
    name, in the preset's row order (rows it no longer has last)."""
    by_name = {r["row"]: r for r in earlier} | {r["row"]: r for r in new}
    order = list(ROWS[preset])
    return sorted(by_name.values(),
                  key=lambda r: order.index(r["row"]) if r["row"] in order else len(order))


def table(rows: list[dict], preset: str) -> str:
    lines = [f"{TABLE_START}{preset}; host CPU {host.cpu_name()}, flags "
             f"{' '.join(host.cpu_flags()) or 'unknown'}.", "",
             "| row | change | mean test accuracy | std | seeds | training s per seed | "
             "final evaluation s | compile s | device, dtype |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if "error" in r:
            change = ROWS[preset][r["row"]].change if r["row"] in ROWS[preset] else ""
            lines.append(f"| {r['row']} | {change} | error: "
                         f"{r['error']} | | | | | | |")
            continue
        train = f"{r['mean_train_s']:.2f}" + (" (the full row's)" if r["eval_only"] else "")
        lines.append(f"| {r['row']} | {r['change']} | {100 * r['mean_accuracy']:.2f} % | "
                     f"{100 * r['std_accuracy']:.2f} | {r['seeds']} | {train} | "
                     f"{r['final_eval_s']:.1f} | {r['compile_s']:.1f} | "
                     f"{r['device']}, {r['dtype']} |")
    return "\n".join(lines)


@dataclasses.dataclass
class Config(Checked):
    data_dir: str | None = flag(None, "dataset folder in the local layout (required)")
    preset: str = flag("gpu", "the cifar_inception preset whose ingredients are ablated",
                       choices=list(ROWS))
    seeds: int = flag(3, "seeds per row", ge=1, le=1000)
    rows: str = flag("", "the rows to run (default: all of the preset's; rows of "
                         + "; of ".join(f"{p}: {','.join(r)}" for p, r in ROWS.items()) + ")",
                       items=Items(names=ALL_ROWS, allow_empty=True))
    extra: str = flag("", "flags added to every row, e.g. \"--train-limit 10000 --epochs 3\" "
                          "for a short probe (checked against cifar_inception's flags first)")
    work: str | None = flag(None, "folder of the rows' runs, kept: finished rows are not run "
                                  "again (default: a new temporary folder)")
    full_run: str | None = flag(None, "folder of a finished cifar_inception run of the "
                                      "preset (same seeds and --extra) to use as the full "
                                      "row; with --seeds 1 also one seed_<s> folder of a "
                                      "--seeds N run (s: the row's --seed)")
    compile_cache: str | None = flag(None, "compilation cache folder (default: one in the "
                                           "work folder)")
    out: str | None = flag(None, "JSON output (default: benchmarks/results/"
                                 "cifar_ablation.json for gpu, cifar_cpu_ablation.json for "
                                 "cpu); this call's rows are added to the rows already there")
    fresh: bool = flag(False, "replace --out's rows and notes instead of adding to them")

    def names(self) -> list[str]:
        return self.rows.split(",") if self.rows else list(ROWS[self.preset])

    def rules(self) -> None:
        if not self.data_dir:
            raise ConfigError("--data-dir is required")
        try:
            extra = shlex.split(self.extra)
        except ValueError as e:
            raise ConfigError(f"--extra: {e}") from None
        names = self.names()
        foreign = [n for n in names if n not in ROWS[self.preset]]
        if foreign:
            raise ConfigError(f"--rows {','.join(foreign)}: not rows of --preset "
                              f"{self.preset}; its rows are {','.join(ROWS[self.preset])}")
        if "full" not in names and any(ROWS[self.preset][n].eval_only for n in names):
            raise ConfigError("--rows: the evaluation-only rows evaluate the full row's "
                              "weights; add full (kept from --work or --full-run if there)")
        for name in names:  # every row's flags, as cifar_inception checks them
            row = ROWS[self.preset][name]
            argv = ["--preset", self.preset, "--seeds", str(self.seeds), *row.flags, *extra]
            try:
                values = _row_values(argv)
            except ConfigError as e:
                raise ConfigError(f"--extra {self.extra!r}: {e}") from None
            try:
                cifar_inception.Config(**values)
            except ConfigError as e:
                raise ConfigError(f"row {name} with --extra {self.extra!r}: {e}") from None


def main(argv=None) -> list[dict]:
    args = config.parse(Config, __doc__, argv)
    names = args.names()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="jaxhw-ablation-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else OUT[args.preset]
    args = dataclasses.replace(args, compile_cache=args.compile_cache
                               or str(work / "compile_cache"))
    setting = {"preset": args.preset, "seeds": args.seeds, "extra": args.extra,
               "host_cpu": host.cpu_name(), "host_cpu_flags": host.cpu_flags()}
    earlier, notes = ([], "") if args.fresh else earlier_rows(out, setting)
    if args.full_run:
        adopt_full_run(Path(args.full_run), args, work)
    rows, start = [], time.perf_counter()
    for name in names:
        print(f"[{time.perf_counter() - start:7.1f} s] {name}: {ROWS[args.preset][name].change}",
              flush=True)
        try:
            rows.append(run_row(name, args, work))
        except (Exception, SystemExit) as e:  # one broken row must not hide the others
            rows.append({"row": name, "error": f"{type(e).__name__}: {e}"})
        every = merge_rows(earlier, rows, args.preset)
        out.parent.mkdir(parents=True, exist_ok=True)  # after every row: none is lost
        out.write_text(json.dumps({**setting, "rows": every,
                                   "total_s": time.perf_counter() - start}, indent=2))
        out.with_suffix(".md").write_text(notes + table(every, args.preset) + "\n")
    print(table(rows, args.preset))
    print(f"written: {out} and {out.with_suffix('.md')} (runs in {work})")
    return rows


if __name__ == "__main__":
    main()
