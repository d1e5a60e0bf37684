"""Execute the notebooks on the real datasets with their own recipes and store their
outputs, so that the notebooks show real results where they are read (GitHub, an editor).

    python -m experiments.notebooks.render --data-dir ~/.cache/jaxhw-data           # all four
    python -m experiments.notebooks.render --data-dir DIR --only bert_imdb

Each notebook runs with its defaults (on a CPU: the CPU recipes, full size); only
``DATA_DIR`` and ``CHECKPOINTS`` are set. Its runs are kept in ``--runs``/<notebook>
(default ``checkpoints/notebooks``), so the long ones can be trained first by the same
commands (``python -m experiments.<name> ... --checkpoint-dir checkpoints/notebooks/<notebook>/<run>``),
and a rendering that stops is taken up again: the training cells pass ``--resume auto``
and find those runs finished. A note under the title says which CPU, commit and date gave
the outputs; the stored outputs name the runs' folder ``checkpoints``, as a reader's run
with the defaults does.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from jaxhw import host

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

NOTEBOOKS = ("cifar_cnn", "transformer", "vit", "bert_imdb")
RUNS = ROOT / "checkpoints" / "notebooks"  # kept: a rendering resumes what is there
NOTE_TAG = "rendered"


def settle(text: str) -> str:
    """What a terminal would keep of ``text``: each carriage return moves back to the line's
    start and the characters after it overwrite what is there, so a progress bar's hundreds of
    updates become its last state. A bar that erased itself (tqdm's ``leave=False``) leaves no
    line, and neither does a bar's unfinished line (no newline yet: a later update or another
    stream's print redraws it)."""
    lines = text.split("\n")
    kept = []
    for k, line in enumerate(lines):
        if "\r" not in line:
            kept.append(line)
            continue
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        if shown.strip() and k < len(lines) - 1:
            kept.append(shown.rstrip())
    return "\n".join(kept)


# tqdm's warning that the rendering kernel has no ipywidgets (its bars fall back to text):
# a fact of the machine that rendered, not of the notebook (Colab has ipywidgets). Two
# lines: the warning, with the path of that machine's tqdm, and the line that raised it.
NO_WIDGETS = re.compile(r"[^\n]*TqdmWarning: IProgress not found[^\n]*\n"
                        r"(?:[ \t]+from \.autonotebook import[^\n]*\n)?")


def machine_paths(runs: Path = RUNS) -> list[tuple[re.Pattern, str]]:
    """The rendering machine's paths, as outputs print them, and what a reader's own run
    prints there instead: a notebook's runs folder (``runs/<notebook>``, or a temporary
    ``jaxhw-render-*/<notebook>``) is the notebook's ``checkpoints``, the repository root
    is ``.``, the home folder is ``~``."""
    end = r"(?![\w.-])"  # the whole folder name, not a longer one that starts with it
    return [(re.compile(re.escape(str(runs)) + r"/[\w.-]+" + end), "checkpoints"),
            (re.compile(re.escape(tempfile.gettempdir()) + r"/jaxhw-render-[\w.-]+/[\w.-]+"
                        + end), "checkpoints"),
            (re.compile(re.escape(str(ROOT)) + end), "."),
            (re.compile(re.escape(str(Path.home())) + end), "~")]


def relative_paths(text: str, runs: Path = RUNS) -> str:
    """``text`` with the rendering machine's paths as a reader's run shows them
    (:func:`machine_paths`)."""
    for pattern, shown in machine_paths(runs):
        text = pattern.sub(shown, text)
    return text


def _merge_streams(outputs: list) -> list:
    """``outputs`` with each run of consecutive outputs of one stream joined into one."""
    merged = []
    for out in outputs:
        if (out.output_type == "stream" and merged
                and merged[-1].output_type == "stream" and merged[-1].name == out.name):
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


def tidy(nb: nbformat.NotebookNode, runs: Path = RUNS) -> None:
    """Merge each cell's consecutive outputs of one stream (stdout, stderr) and settle their
    carriage returns, so the stored notebook shows what a reader's screen showed, not every
    progress-bar update; drop the rendering machine's missing-ipywidgets warning and write
    its paths as a reader's run shows them (:func:`relative_paths`); a stream left empty is
    dropped (and what it separated, joined)."""
    for cell in nb.cells:
        if "outputs" not in cell:
            continue
        merged = _merge_streams(cell.outputs)
        for out in merged:
            if out.output_type == "stream":
                out.text = relative_paths(NO_WIDGETS.sub("", settle(out.text)), runs)
            elif "text/plain" in out.get("data", {}):
                out.data["text/plain"] = relative_paths(out.data["text/plain"], runs)
        cell.outputs = _merge_streams(
            [o for o in merged if o.output_type != "stream" or o.text.strip()])


def render(name: str, data_dir: str, runs: Path) -> Path:
    """Execute notebook ``name`` with its defaults on ``data_dir``, its runs in
    ``runs/<name>``, and store it with its outputs tidied and a note of what gave them."""
    path = HERE / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if NOTE_TAG not in c.metadata.get("tags", [])]
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    defaults = params.source
    params.source = "\n".join([defaults, "DRIVE = False", f"DATA_DIR = {data_dir!r}",
                                f"CHECKPOINTS = {str(runs / name)!r}"])
    started = time.time()
    NotebookClient(nb, timeout=7200, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    minutes = (time.time() - started) / 60
    tidy(nb, runs)
    params.source = defaults  # readers (and Colab) get the defaults back
    params.outputs = []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    trained = runs / "TRAINED_AT"  # the commit and date of runs trained before (optional)
    before = (f" Its long runs were trained beforehand by the same commands "
              f"({trained.read_text().strip()}); the training cells found them finished "
              f"(`--resume auto`), show their logged history and evaluate their final weights "
              f"again." if trained.is_file() else "")
    note = nbformat.v4.new_markdown_cell(
        f"*The outputs below come from running this notebook with its default parameters "
        f"on the real datasets, on a CPU ({host.cpu_name()}), at commit {commit}, on "
        f"{time.strftime('%Y-%m-%d', time.gmtime(started))} ({minutes:.0f} min).{before} "
        f"On a GPU runtime the notebook trains its GPU recipe where it has one.*")
    note.metadata["tags"] = [NOTE_TAG]
    nb.cells.insert(1, note)
    nbformat.write(nb, path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the datasets in jaxhw's plain layout")
    p.add_argument("--runs", default=str(RUNS),
                   help="folder of the notebooks' runs, one subfolder per notebook, kept "
                        "between renderings (default: checkpoints/notebooks)")
    p.add_argument("--only", default=",".join(NOTEBOOKS),
                   help=f"comma-separated notebooks (default: all of {', '.join(NOTEBOOKS)})")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
        p.error(f"unknown notebooks {unknown}; choose from {', '.join(NOTEBOOKS)}")
    runs = Path(args.runs).expanduser().absolute()
    for name in names:
        print(f"rendering {name} ...", flush=True)
        print(f"written: {render(name, str(Path(args.data_dir).expanduser()), runs)}")


if __name__ == "__main__":
    main()
