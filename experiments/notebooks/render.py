"""Execute the notebooks on the real datasets with CPU-sized budgets and store their outputs,
so that the notebooks show real results where they are read (GitHub, an editor).

    python -m experiments.notebooks.render --data-dir ~/.cache/jaxhw-data           # all four
    python -m experiments.notebooks.render --data-dir DIR --only bert_imdb

Each notebook runs with its parameters cell replaced by the budget below (the stored
parameters cell keeps the Colab defaults); a note under the title says which budget, CPU
and commit gave the outputs. Runs go to a temporary folder, not ``checkpoints/``; the
stored outputs name it ``checkpoints``, as a reader's run with the defaults does.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from jaxhw import host

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# The budgets of a 2-core CPU: minutes per notebook, not the hours the full runs take.
BUDGETS = {
    "cifar_cnn": {
        "SIMPLE_ARGS": ["--epochs", "1"],
        "BETTERNET_ARGS": ["--train-limit", "10000", "--epochs", "3"]},
    "transformer": {
        "DEMO_ARGS": ["--preset", "small", "--steps", "20"],
        "TASK_ARGS": ["--task", "reverse", "--epochs", "2", "--train-size", "20000"]},
    "vit": {
        "VIT_ARGS": ["--preset", "fast", "--epochs", "3", "--train-limit", "20000"],
        "SWEEP_ARGS": ["--epochs", "1", "--train-limit", "5000", "--test-limit", "2000",
                       "--only", "base,patch4,heads1"]},
    "bert_imdb": {
        "BERT_ARGS": ["--model", "minilm", "--max-len", "128", "--batch-size", "16",
                      "--epochs", "1", "--train-limit", "1000", "--val-limit", "200",
                      "--test-limit", "500", "--lr", "1e-4"]},
}
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


def machine_paths() -> list[tuple[re.Pattern, str]]:
    """The rendering machine's paths, as outputs print them, and what a reader's own run
    prints there instead: a render's run folder (``jaxhw-render-*/<notebook>`` in the
    temporary folder) is the notebook's ``checkpoints``, the repository root is ``.``, the
    home folder is ``~``."""
    end = r"(?![\w.-])"  # the whole folder name, not a longer one that starts with it
    return [(re.compile(re.escape(tempfile.gettempdir()) + r"/jaxhw-render-[\w.-]+/[\w.-]+"
                        + end), "checkpoints"),
            (re.compile(re.escape(str(ROOT)) + end), "."),
            (re.compile(re.escape(str(Path.home())) + end), "~")]


def relative_paths(text: str) -> str:
    """``text`` with the rendering machine's paths as a reader's run shows them
    (:func:`machine_paths`)."""
    for pattern, shown in machine_paths():
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


def tidy(nb: nbformat.NotebookNode) -> None:
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
                out.text = relative_paths(NO_WIDGETS.sub("", settle(out.text)))
            elif "text/plain" in out.get("data", {}):
                out.data["text/plain"] = relative_paths(out.data["text/plain"])
        cell.outputs = _merge_streams(
            [o for o in merged if o.output_type != "stream" or o.text.strip()])


def render(name: str, data_dir: str, work: Path) -> Path:
    path = HERE / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if NOTE_TAG not in c.metadata.get("tags", [])]
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    defaults = params.source
    budget = BUDGETS[name]
    params.source = "\n".join(
        ["REPO_URL = None", "DRIVE = False", f"DATA_DIR = {data_dir!r}",
         f"CHECKPOINTS = {str(work / name)!r}"]
        + [f"{key} = {value!r}" for key, value in budget.items()])
    NotebookClient(nb, timeout=3600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    tidy(nb)
    params.source = defaults  # readers (and Colab) get the defaults back
    params.outputs = []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    shown = "; ".join(f"`{k} = {v}`" for k, v in budget.items())
    note = nbformat.v4.new_markdown_cell(
        f"*The outputs below come from a run on the real datasets on a CPU, "
        f"{host.cpu_name()}, at commit {commit}, with a CPU-sized budget: {shown}. The "
        f"parameters cell holds the defaults for a Colab GPU.*")
    note.metadata["tags"] = [NOTE_TAG]
    nb.cells.insert(1, note)
    nbformat.write(nb, path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="the datasets in jaxhw's plain layout")
    p.add_argument("--only", default=",".join(BUDGETS),
                   help=f"comma-separated notebooks (default: all of {', '.join(BUDGETS)})")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BUDGETS))
    if unknown:
        p.error(f"unknown notebooks {unknown}; choose from {', '.join(BUDGETS)}")
    with tempfile.TemporaryDirectory(prefix="jaxhw-render-") as work:
        for name in names:
            print(f"rendering {name} ...", flush=True)
            print(f"written: {render(name, str(Path(args.data_dir).expanduser()), Path(work))}")


if __name__ == "__main__":
    main()
