"""What the committed notebooks show, read from their JSON (no kernel): each graded module's
whole source, an image in every cell that draws, the teaching around them, a Discussion and
a Conclusion, and outputs free of the rendering machine's paths and of library warnings."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import nbformat
import pytest

from jaxhw.models import bert, cnn, vit
from jaxhw.models import transformer as tf

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "experiments" / "notebooks"
GRADED = {
    "cifar_cnn": [cnn.SimpleCNN, cnn.Inception, cnn.ResidualBlock, cnn.BetterNet, cnn.InceptionCNN],
    "transformer": [tf.PositionalEncoding, tf.MultiHeadAttention, tf.EncoderLayer,
                    tf.DecoderLayer, tf.Transformer],
    "vit": [vit.PatchEmbed, vit.Attention, vit.Mlp, vit.Block, vit.VisionTransformer],
    "bert_imdb": [bert.BertClassifier],
}
MIN_WORDS = 1500  # of explanation (Markdown cells) per notebook
MACHINE = re.compile(r"/(root|work|home|tmp|usr|opt)/|[A-Z]:\\\\|site-packages")
WARNING = re.compile(r"warn", re.IGNORECASE)


def _notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _texts(cell) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        texts.append(out.get("text", ""))
        for kind in ("text/plain", "text/markdown", "text/html"):
            texts.append(out.get("data", {}).get(kind, ""))
    return texts


def test_the_four_notebooks_are_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(GRADED)


@pytest.mark.parametrize("name", sorted(GRADED))
def test_every_graded_module_is_on_the_page_whole(name):
    shown = "\n".join(t for c in _notebook(name).cells for t in _texts(c))
    for module in GRADED[name]:
        assert inspect.getsource(module).rstrip() in shown, module.__name__


@pytest.mark.parametrize("name", sorted(GRADED))
def test_every_drawing_cell_stored_its_image(name):
    cells = [c for c in _notebook(name).cells if "draws" in c.metadata.get("tags", [])]
    assert len(cells) >= 3
    for cell in cells:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source[:120]


@pytest.mark.parametrize("name", sorted(GRADED))
def test_the_page_teaches_and_concludes(name):
    nb = _notebook(name)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    words = len(re.findall(r"[A-Za-z][A-Za-z'-]*", re.sub(r"\$[^$]*\$", " ", markdown)))
    assert words >= MIN_WORDS, words
    headings = re.findall(r"^## (.+)$", markdown, re.MULTILINE)
    assert "Discussion" in headings and "Conclusion" in headings
    assert headings.index("Discussion") < headings.index("Conclusion")
    first = nb.cells[0].source
    assert "colab.research.google.com" in first and "Expected on a Colab" in first
    assert "$$" in markdown  # the equations


@pytest.mark.parametrize("name", sorted(GRADED))
def test_stored_outputs_are_a_real_run_without_machine_paths_or_warnings(name):
    nb = _notebook(name)
    note = [c for c in nb.cells if "rendered" in c.metadata.get("tags", [])]
    assert len(note) == 1 and "at commit" in note[0].source and "CPU" in note[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    assert not params.outputs
    silent = {"parameters", "storage"}  # they assign; the others print or draw
    assert all(c.outputs for c in code if not silent & set(c.metadata.get("tags", []))), \
        "every other code cell ran"
    for cell in code:
        assert not any(o.output_type == "error" for o in cell.outputs)
        for text in _texts(cell):
            assert not MACHINE.search(text), (cell.source[:80], MACHINE.search(text))
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                assert not WARNING.search(out.text), out.text[:300]
