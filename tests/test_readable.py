"""What a reader meets first stays short: each experiment's module docstring (also its
``--help``), the README, and a training package that reads declared properties instead
of searching program text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_an_experiment_says_what_it_is_in_at_most_15_lines(path):
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert doc, f"{path.name} has no module docstring"
    assert len(doc.strip().splitlines()) <= 15


def test_the_readme_fits_150_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def _lines_matching(files, pattern: str) -> list[str]:
    found = re.compile(pattern)
    return [f"{p.relative_to(ROOT)}:{n}" for p in files
            for n, line in enumerate(p.read_text().splitlines(), 1) if found.search(line)]


def test_the_training_package_searches_no_program_text():
    """Choices such as steps per device call come from the model's declared
    ``convolutional``, not from the text of a jaxpr or an HLO module."""
    assert not _lines_matching((ROOT / "jaxhw" / "train").glob("*.py"),
                               r"conv_general_dilated|as_text\(|make_jaxpr")


def test_layers_are_injected_as_flax_partials():
    assert not _lines_matching((ROOT / "jaxhw").rglob("*.py"),
                               r"BatchNormSettings|make_conv|_layer_args")
