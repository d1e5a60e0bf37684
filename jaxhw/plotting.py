"""Every plot of the project, written to PNG files (matplotlib's Agg backend, no screen)."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxhw.train.metrics import confusion  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                   path: str | os.PathLike) -> None:
    """Row-normalised confusion matrix (row = true class), with counts in the cells."""
    cm = confusion(labels, predictions, len(class_names))
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(f"confusion matrix (accuracy {100 * np.trace(cm) / max(cm.sum(), 1):.2f} %)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Train / eval loss and eval accuracy per epoch."""
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(epochs, [r["eval_loss"] for r in history], "o-", label="test")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [100 * r["eval_accuracy"] for r in history], "o-")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy (%)")
    _save(fig, path)
