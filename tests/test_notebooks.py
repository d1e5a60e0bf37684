"""Notebooks run top to bottom on tiny data (their parameters cell is replaced)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "experiments" / "notebooks"


def run_notebook(name: str, parameters: str, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook has exactly one cell tagged 'parameters'"
    cells[0].source = parameters
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or json.dumps(out.get("data", {}).get("text/markdown", "")))
    return "\n".join(text)


@pytest.mark.notebook
def test_cifar_notebook(tiny_data, tmp_path):
    params = f"""
REPO_URL = None
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
SIMPLE_ARGS = ["--epochs", "1", "--print-every", "4"]
BETTERNET_ARGS = ["--epochs", "1", "--batch-size", "16", "--stem", "8", "--widths", "16,16,16"]
"""
    nb = run_notebook("cifar_cnn.ipynb", params, tmp_path)
    text = outputs(nb)
    assert "Accuracy of the network on the 40 test images" in text
    assert (tmp_path / "ckpt" / "cifar_inception" / "confusion_matrix.png").is_file()
    assert "test accuracy" in text
