"""The notebook renderer stores what a reader's screen showed, not every progress-bar update."""

import nbformat

from experiments.notebooks.render import settle, tidy


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


def test_stored_notebooks_hold_settled_outputs():
    """The committed notebooks were rendered (or tidied) by render.py: no stream output
    still holds carriage returns or the rendering kernel's missing-ipywidgets warning, and
    no cell holds two consecutive outputs of one stream."""
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
            assert not any(a.output_type == b.output_type == "stream" and a.name == b.name
                           for a, b in zip(outs, outs[1:])), path.name
