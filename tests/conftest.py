"""Shared fixtures: tiny datasets written in the plain local layout."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

# Several test processes (pytest-xdist) share one GPU: each must not take 75 % of its memory
# on start, as JAX does by default. Set before any test module imports jax.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def write_image_split(root: Path, name: str, split: str, n: int, shape: tuple, seed: int = 0,
                      num_classes: int = 10) -> None:
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).astype(np.uint8)
    np.savez(folder / f"{split}.npz", images=images, labels=labels)


def write_text_split(root: Path, split: str, n: int) -> None:
    folder = root / "imdb"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"review {i} was {'good' if i % 2 else 'bad'}<br />",
                                "label": i % 2}) + "\n")


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A data directory with small cifar10, fashion_mnist and imdb splits."""
    root = tmp_path / "data"
    for split, n in (("train", 64), ("test", 40)):
        write_image_split(root, "cifar10", split, n, (32, 32, 3), seed=len(split))
        write_image_split(root, "fashion_mnist", split, n, (28, 28), seed=len(split))
        write_text_split(root, split, n)
    return root


WORDS = ["good", "bad", "movie", "plot", "great", "awful", "the", "was", "a"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny BERT and a WordPiece tokenizer, saved like a hub model
    (ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then WORDS from 5)."""
    from tests.tiny import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), WORDS)
