"""Notebooks run top to bottom on tiny data (their parameters cell is replaced)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "experiments" / "notebooks"


def run_notebook(name: str, parameters: str, tmp_path: Path, cwd: Path = ROOT,
                 upto: str | None = None) -> nbformat.NotebookNode:
    """Execute notebook ``name`` with its parameters cell replaced, in folder ``cwd``
    (``upto``: stop after the cell with that tag)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook has exactly one cell tagged 'parameters'"
    cells[0].source = parameters
    if upto:
        last = next(i for i, c in enumerate(nb.cells) if upto in c.metadata.get("tags", []))
        nb.cells = nb.cells[:last + 1]
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    check_drawings(nb)
    return nb


def check_drawings(nb) -> None:
    """Every executed cell tagged ``draws`` stored at least one image."""
    for k, cell in enumerate(nb.cells):
        if "draws" in cell.metadata.get("tags", []) and cell.get("outputs") is not None:
            if cell.get("execution_count") is None:
                continue  # not run (a test that stops early)
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert images, f"cell {k} draws but stored no image:\n{cell.source[:200]}"


def outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or json.dumps(out.get("data", {}).get("text/markdown", "")))
    return "\n".join(text)


def _has_git_history() -> bool:
    return (ROOT / ".git").exists()


def _cifar_params(repo_url: str | None, tiny_data: Path, tmp_path: Path) -> str:
    """The cifar notebook's parameters cell at tiny sizes (both of its trainings, 1 epoch)."""
    return f"""
REPO_URL = {repo_url!r}
DRIVE = False
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
SIMPLE_ARGS = ["--epochs", "1", "--print-every", "4"]
BETTERNET_ARGS = ["--epochs", "1", "--batch-size", "16", "--stem", "8", "--widths", "16,16,16"]
"""


def _check_cifar_outputs(text: str, tmp_path: Path) -> None:
    """What a whole run of the cifar notebook prints and writes (SimpleCNN, then BetterNet)."""
    assert "Accuracy of the network on the 40 test images" in text
    assert (tmp_path / "ckpt" / "cifar_inception" / "confusion_matrix.png").is_file()
    assert "test accuracy" in text


@pytest.mark.notebook
@pytest.mark.skipif(_has_git_history(), reason="the Colab-style test below runs this "
                                               "notebook whole, from a clone")
def test_cifar_notebook(tiny_data, tmp_path):
    text = outputs(run_notebook("cifar_cnn.ipynb", _cifar_params(None, tiny_data, tmp_path),
                                tmp_path))
    _check_cifar_outputs(text, tmp_path)


@pytest.mark.slow
@pytest.mark.notebook
def test_transformer_notebook(tmp_path):
    params = f"""
REPO_URL = None
DRIVE = False
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


@pytest.mark.slow
@pytest.mark.notebook
def test_vit_notebook(tiny_data, tmp_path):
    params = f"""
REPO_URL = None
DRIVE = False
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


@pytest.mark.slow
@pytest.mark.notebook
def test_bert_notebook(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path / "cache"))
    params = f"""
REPO_URL = None
DRIVE = False
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
BERT_ARGS = ["--model", {str(tiny_model_dir)!r}, "--max-len", "16", "--batch-size", "8",
             "--epochs", "1", "--buckets", "2"]
GPU_ARGS = ["--model", "bert-base-uncased"]   # not used: BERT_ARGS is set
"""
    text = outputs(run_notebook("bert_imdb.ipynb", params, tmp_path))
    assert "Test Accuracy: 0." in text and "precision" in text
    assert (tmp_path / "ckpt" / "bert_imdb" / "confusion_matrix.png").is_file()


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name, args, expected", [
    ("cifar_cnn", "BETTERNET_ARGS", ["GPU runtime", "widths [64, 128, 256]", "GELU",
                                     "residual blocks per stage [0, 1, 2]",
                                     "test-time views: 6 (six)", "12 epochs of batch 1024"]),
    ("vit", "VIT_ARGS", ["GPU runtime", "4x4 patches -> 49 tokens", "width 128, depth 6",
                         "8 heads", "25 epochs of batch 512"])])
def test_on_a_gpu_runtime_the_page_describes_the_gpu_recipe(name, args, expected, tiny_data,
                                                            tmp_path):
    """With the device taken for a GPU, the recipe cell picks the GPU recipe and the summary
    describes its config (the recipe's flags, parsed by the experiment's parser)."""
    params = f"""
import jax
jax.default_backend = lambda: "gpu"   # what a GPU runtime reports
REPO_URL = None
DRIVE = False
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "ckpt")!r}
SIMPLE_ARGS = ["--epochs", "1", "--print-every", "4", "--dtype", "float32"]
SWEEP_ARGS = []
{args} = None
"""
    text = outputs(run_notebook(f"{name}.ipynb", params, tmp_path, upto="summary"))
    for phrase in expected:
        assert phrase in text, (phrase, text[-3000:])


def test_every_notebook_has_the_one_setup_cell():
    setup = (NOTEBOOKS / "setup_cell.py").read_text().rstrip("\n")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
        assert len(cells) == 1 and cells[0].source == setup, path.name
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])][0].source
        assert "REPO_URL = None" in params and "github.com/jaxhw" not in params, path.name
        assert "Expected on a Colab" in nb.cells[0].source, path.name


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.skipif(not _has_git_history(), reason="needs the repository's git history")
def test_colab_style_setup_clones_imports_runs_and_survives_a_restart(tiny_data, tmp_path):
    """As on Colab: the notebook runs outside any clone, REPO_URL names a repository (here a
    local path), the setup cell clones it and imports jaxhw from the clone; a second run in
    a fresh kernel (a restart) finds the clone again instead of cloning twice."""
    colab = tmp_path / "content"
    colab.mkdir()
    params = _cifar_params(str(ROOT), tiny_data, tmp_path)
    text = outputs(run_notebook("cifar_cnn.ipynb", params, tmp_path, cwd=colab))
    clone = colab / "jaxhw"
    assert (clone / "jaxhw" / "__init__.py").is_file()
    assert f"jaxhw from {clone / 'jaxhw'}" in text
    _check_cifar_outputs(text, tmp_path)
    assert "installing:" not in text  # this environment already has every dependency
    again = outputs(run_notebook("cifar_cnn.ipynb", params, tmp_path, cwd=colab, upto="setup"))
    assert f"jaxhw from {clone / 'jaxhw'}" in again


@pytest.mark.notebook
def test_setup_outside_a_clone_without_repo_url_says_what_to_do(tmp_path):
    from nbclient.exceptions import CellExecutionError
    with pytest.raises(CellExecutionError, match="Set REPO_URL in the parameters cell"):
        run_notebook("bert_imdb.ipynb", "REPO_URL = None", tmp_path, cwd=tmp_path, upto="setup")


@pytest.mark.slow
@pytest.mark.notebook
def test_a_training_cell_run_again_continues_its_run(tiny_data, tmp_path):
    """After a disconnect the user re-runs the notebook: with its folders kept (DRIVE),
    the training cell resumes from the checkpoint instead of starting over."""
    params = f"""
REPO_URL = None
DRIVE = False
DATA_DIR = {str(tiny_data)!r}
CHECKPOINTS = {str(tmp_path / "drive" / "checkpoints")!r}
SIMPLE_ARGS = ["--epochs", "1", "--print-every", "4"]
BETTERNET_ARGS = []
"""
    first = outputs(run_notebook("cifar_cnn.ipynb", params, tmp_path, upto="train_simple"))
    assert "Accuracy of the network on the 40 test images" in first and "resumed" not in first
    run = tmp_path / "drive" / "checkpoints" / "cifar_simple_cnn"
    assert (run / "1").is_dir()
    again = outputs(run_notebook("cifar_cnn.ipynb", params, tmp_path, upto="train_simple"))
    assert f"resumed from {run} at epoch 1; its logged epochs:" in again
    logged = next(line for line in first.splitlines() if line.startswith("epoch 1/1: train"))
    assert again.count("epoch 1/1: train loss") == 1 and logged in again  # shown, not retrained
    assert json.loads((run / "results.json").read_text())["epochs"] == 1


def test_drive_storage_mounts_and_keeps_everything_there(tmp_path, monkeypatch):
    """With DRIVE on: checkpoints and caches on Drive, the compilation cache on the local
    disk, started from Drive's copy and copied back after every cell (an IPython hook,
    registered once however often the storage cell runs)."""
    import os
    import sys
    import types

    import IPython

    from jaxhw.colab import storage
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.drive", colab.drive)
    monkeypatch.delenv("JAXHW_CACHE_DIR", raising=False)

    class Events:  # IPython's event manager, as much as storage uses
        def __init__(self):
            self.callbacks = {"post_run_cell": []}

        def register(self, name, fn):
            self.callbacks[name].append(fn)

        def unregister(self, name, fn):
            self.callbacks[name].remove(fn)

    shell = types.SimpleNamespace(events=Events())
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    root = tmp_path / "drive" / "MyDrive" / "jaxhw"
    (root / "compile_cache" / "xla_autotune").mkdir(parents=True)
    (root / "compile_cache" / "xla_autotune" / "old-entry").write_bytes(b"before")
    local = tmp_path / "local_cache"
    for _ in range(2):  # the storage cell run twice
        checkpoints, engine_args = storage(True, "checkpoints", mount=str(tmp_path / "drive"),
                                           local_cache=str(local))
    assert mounted == [str(tmp_path / "drive")] * 2
    assert checkpoints == str(root / "checkpoints") and (root / "checkpoints").is_dir()
    assert engine_args == ["--compile-cache", str(local)]
    assert os.environ["JAXHW_CACHE_DIR"] == str(root / "cache")
    assert (local / "xla_autotune" / "old-entry").read_bytes() == b"before"  # seeded
    hooks = shell.events.callbacks["post_run_cell"]
    assert len(hooks) == 1
    (local / "new-program").write_bytes(b"compiled")  # a training cell compiles ...
    hooks[0](None)  # ... and ends
    assert (root / "compile_cache" / "new-program").read_bytes() == b"compiled"
    assert not list(root.rglob("*.partial"))
    assert storage(False, "here") == ("here", [])


def test_drive_storage_outside_colab_says_what_to_do():
    from jaxhw.colab import storage
    with pytest.raises(RuntimeError, match="DRIVE = True needs a Google Colab runtime"):
        storage(True)


SETUP_PROBE = """
import importlib.metadata, json, subprocess, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: {jax!r} if name == "jax" else real(name)
calls = []
subprocess.run = lambda args, **kw: calls.append(list(args))
REPO_URL = None
exec(open({cell!r}).read())
print("PIP", json.dumps(calls))
"""


@pytest.mark.parametrize("jax_version, replaced", [("0.4.30", True), ("0.13.0", False)])
def test_setup_cell_replaces_an_older_jax_and_keeps_a_newer_one(jax_version, replaced):
    """As on a Colab runtime whose jax is outside jaxhw's range (its metadata faked; pip is
    not run): an older jax is replaced by one inside the range, a newer one is kept."""
    import subprocess
    import sys
    import tomllib
    script = SETUP_PROBE.format(jax=jax_version, cell=str(NOTEBOOKS / "setup_cell.py"))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    calls = json.loads(done.stdout.split("PIP ", 1)[1])
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    from packaging.requirements import Requirement
    jax_range = str(next(Requirement(d) for d in deps if d.startswith("jax")).specifier)
    if replaced:
        assert f"replacing jax {jax_version}, older than jaxhw's range ({jax_range})" \
            in done.stdout
        pip = calls[0]
        assert any(a.startswith("jax") and a.endswith(jax_range) for a in pip), pip
        constraints = open(pip[pip.index("-c") + 1]).read()
        assert "jax==" not in constraints and "jaxlib==" not in constraints
    else:
        assert f"note: keeping jax {jax_version}" in done.stdout
        assert not any(a.startswith("jax") for call in calls for a in call
                       if not a.startswith("jaxhw"))
