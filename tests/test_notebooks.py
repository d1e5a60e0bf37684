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


@pytest.mark.notebook
def test_transformer_notebook(tmp_path):
    params = f"""
REPO_URL = None
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
DEMO_ARGS = ["--preset", "small", "--steps", "2", "--dim", "16", "--ffn-dim", "32",
             "--seq-len", "12", "--vocab", "50", "--layer-num", "1"]
TASK_ARGS = ["--task", "reverse", "--epochs", "1", "--train-size", "256", "--test-size", "32",
             "--dim", "16", "--ffn-dim", "32", "--seq-len", "6"]
"""
    text = outputs(run_notebook("transformer.ipynb", params, tmp_path))
    assert "Epoch: 2, Loss:" in text
    assert "exact-sequence accuracy:" in text
    assert (tmp_path / "ckpt" / "transformer_reverse" / "attention.png").is_file()


@pytest.mark.notebook
def test_vit_notebook(tiny_data, tmp_path):
    params = f"""
REPO_URL = None
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
VIT_ARGS = ["--preset", "fast", "--epochs", "1", "--batch-size", "16", "--embed-dim", "16",
            "--depth", "1"]
SWEEP_ARGS = ["--epochs", "1", "--only", "base,heads1", "--batch-size", "16"]
"""
    text = outputs(run_notebook("vit.ipynb", params, tmp_path))
    assert "Test accuracy:" in text
    assert (tmp_path / "ckpt" / "vit_fashion_mnist" / "attention.png").is_file()
    assert (tmp_path / "ckpt" / "vit_sweep_results" / "sweep.png").is_file()
    assert "heads1" in (tmp_path / "ckpt" / "vit_sweep_results" / "table.md").read_text()


@pytest.mark.notebook
def test_bert_notebook(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path / "cache"))
    params = f"""
REPO_URL = None
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
BERT_ARGS = ["--model", {str(tiny_model_dir)!r}, "--max-len", "16", "--batch-size", "8",
             "--epochs", "1", "--buckets", "2"]
"""
    text = outputs(run_notebook("bert_imdb.ipynb", params, tmp_path))
    assert "Test Accuracy: 0." in text and "precision" in text
    assert (tmp_path / "ckpt" / "bert_imdb" / "confusion_matrix.png").is_file()
