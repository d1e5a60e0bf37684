"""The notebook renderer stores what a reader's screen showed, not every progress-bar update."""

import re
import tempfile
from pathlib import Path

import nbformat

from experiments.notebooks.render import ROOT, relative_paths, settle, tidy

# Paths of the machine that rendered: a render's run folder, the clone, a home folder.
MACHINE_PATH = re.compile(r"jaxhw-render-|(?:^|[\s'\"(=:])/(?:root|home|work|Users)/")


def test_settle_keeps_a_bars_last_state_and_drops_erased_or_unfinished_bars():
    assert settle("\repoch 1:  10%\repoch 1:  50%\repoch 1: 100%\n") == "epoch 1: 100%\n"
    assert settle("\repoch 1: 100%|##| 78/78\r" + " " * 20 + "\r") == ""   # leave=False
    assert settle("\rtraining  34%") == ""      # still running when another stream printed
    assert settle("abcdef\rXY\n") == "XYcdef\n"  # overwrites, as a terminal does
    assert settle("loss 1.5\naccuracy 50 %\n") == "loss 1.5\naccuracy 50 %\n"


def test_tidy_merges_a_streams_consecutive_outputs_and_drops_emptied_ones():
    out = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [
        out("stream", name="stdout", text="model: 1,000 parameters\n"),
        out("stream", name="stderr", text="\repoch 1:   0%"),
        out("stream", name="stderr", text="\repoch 1: 100%"),
        out("stream", name="stderr", text="\r" + " " * 14 + "\r"),
        out("stream", name="stdout", text="epoch 1: "),
        out("stream", name="stdout", text="accuracy 50 %\n"),
        out("display_data", data={"text/plain": "<Figure>"}),
        out("stream", name="stdout", text="done\n"),
        out("stream", name="stderr", text=(
            "/home/u/venv/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update "
            "jupyter and ipywidgets.\n  from .autonotebook import tqdm as notebook_tqdm\n")),
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# title"), cell])
    tidy(nb)
    kinds = [(o.output_type, o.get("name"), o.get("text")) for o in nb.cells[1].outputs]
    assert kinds == [("stream", "stdout", "model: 1,000 parameters\nepoch 1: accuracy 50 %\n"),
                     ("display_data", None, None),
                     ("stream", "stdout", "done\n")]
    assert "outputs" not in nb.cells[0]


def test_outputs_name_the_readers_folders_not_the_rendering_machines():
    run = f"{tempfile.gettempdir()}/jaxhw-render-ab12_x/vit"
    assert relative_paths(f"results: {run}/vit_fashion_mnist/results.json; plots: a.png") == (
        "results: checkpoints/vit_fashion_mnist/results.json; plots: a.png")
    assert relative_paths(f"tensorboard --logdir {run}\n") == "tensorboard --logdir checkpoints\n"
    assert relative_paths(f"jaxhw from {ROOT}/jaxhw;") == "jaxhw from ./jaxhw;"
    assert relative_paths(f"cache: {Path.home()}/.cache/x") == "cache: ~/.cache/x"
    assert relative_paths(f"{ROOT}x/y") == f"{ROOT}x/y"  # another folder, longer name
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"at {run}/r\n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": f"'{run}'"},
                                           execution_count=1)]
    nb = nbformat.v4.new_notebook(cells=[cell])
    tidy(nb)
    assert [o.get("text") or o.data["text/plain"] for o in nb.cells[0].outputs] == [
        "at checkpoints/r\n", "'checkpoints'"]


def test_stored_notebooks_hold_settled_outputs():
    """The committed notebooks were rendered (or tidied) by render.py: no stream output
    still holds carriage returns or the rendering kernel's missing-ipywidgets warning, no
    output a path of the machine that rendered, and no cell two consecutive outputs of one
    stream."""
    from pathlib import Path
    folder = Path(__file__).resolve().parents[1] / "experiments" / "notebooks"
    notebooks = sorted(folder.glob("*.ipynb"))
    assert len(notebooks) == 4
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            outs = cell.get("outputs", [])
            streams = [o for o in outs if o.output_type == "stream"]
            assert all("\r" not in o.text for o in streams), path.name
            assert not any("IProgress not found" in o.text for o in streams), path.name
            shown = [o.get("text") or o.get("data", {}).get("text/plain", "") for o in outs]
            assert not any(MACHINE_PATH.search(t) or str(ROOT) in t for t in shown), path.name
            assert not any(a.output_type == b.output_type == "stream" and a.name == b.name
                           for a, b in zip(outs, outs[1:])), path.name
