"""The library never imports its applications: jaxhw/ neither imports nor names
experiments/, its modules import each other without a cycle, and a run folder loads from
any directory with only the installed package."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jaxhw"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` (of ``package``, default: its place in jaxhw/) imports, at any
    level (inside functions too), resolved to absolute names (``from jaxhw.x import y``
    counts as jaxhw.x and jaxhw.x.y)."""
    found = set()
    if package is None:
        package = _module_name(path) if path.name == "__init__.py" else \
            _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_module_of_jaxhw_imports_or_names_experiments():
    for path in PACKAGE.rglob("*.py"):
        imported = _imports(path)
        assert not any(m.split(".")[0] == "experiments" for m in imported), path
        strings = [n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert not any("experiments." in s for s in strings), path


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports that returns to its start, or None. A module importing a package
    above it (``jaxhw.train.loop`` -> ``jaxhw.train``) is how packages work, not a cycle."""
    def parents(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:k]) for k in range(1, len(parts))}

    def visit(node: str, path: list[str], seen: set[str]) -> list[str] | None:
        for nxt in sorted(graph.get(node, set()) - parents(node)):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                found = visit(nxt, path + [nxt], seen)
                if found:
                    return found
        return None

    for start in sorted(graph):
        found = visit(start, [start], {start})
        if found:
            return found
    return None


def test_jaxhw_imports_have_no_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_walker_sees_function_level_imports_and_cycles(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from jaxhw.b import g\n")
    assert "jaxhw.b" in _imports(tmp_path / "a.py", "jaxhw")
    assert _find_cycle({"jaxhw.a": {"jaxhw.b"}, "jaxhw.b": {"jaxhw.a"}}) == [
        "jaxhw.a", "jaxhw.b", "jaxhw.a"]
    # a package importing its module, which imports the package: how packages work
    assert _find_cycle({"jaxhw.train.loop": {"jaxhw.train"},
                        "jaxhw.train": {"jaxhw.train.loop"}}) is None


@pytest.mark.slow
def test_a_run_folder_loads_outside_the_clone(tiny_data, tmp_path):
    """A trained run predicts from a directory where ``experiments`` cannot be imported,
    with only the installed jaxhw; a run folder without a predictor record is one line."""
    from experiments import cifar_simple_cnn
    folder = tmp_path / "run"
    cifar_simple_cnn.run(cifar_simple_cnn.Config(
        epochs=1, batch_size=8, data_dir=str(tiny_data), checkpoint_dir=str(folder),
        compile_cache="off"))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    np.save(tmp_path / "images.npy", images)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = ("import importlib.util, sys, numpy as np, jaxhw\n"
              "assert importlib.util.find_spec('experiments') is None\n"
              f"p = jaxhw.load({str(folder)!r})\n"
              f"print([x.label for x in p.predict(np.load({str(tmp_path / 'images.npy')!r}))])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run([sys.executable, "-c", script], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))
    assert len(labels) == 2

    # A folder of an older layout (no predictor record anywhere) is one clear error.
    from jaxhw.predict import RunFolderError
    for path in folder.rglob("*"):
        if path.is_file() and b'"predictor"' in path.read_bytes():
            saved = json.loads(path.read_text())
            saved.pop("predictor")
            path.write_text(json.dumps(saved))
    import jaxhw
    with pytest.raises(RunFolderError, match="older jaxhw.*retrain it"):
        jaxhw.load(folder)
