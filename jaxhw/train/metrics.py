"""Metrics computed on the host from predictions."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray,
                       class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy of each class (recall): correct / examples of that class."""
    cm = confusion(labels, predictions, len(class_names))
    return {name: float(cm[i, i] / max(cm[i].sum(), 1)) for i, name in enumerate(class_names)}


def confusion(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` counts; row = true class, column = predicted."""
    return confusion_matrix(labels, predictions, labels=np.arange(num_classes))


def per_class_table(labels: np.ndarray, predictions: np.ndarray,
                    class_names: Sequence[str]) -> str:
    """A markdown table of per-class accuracy."""
    acc = per_class_accuracy(labels, predictions, class_names)
    rows = ["| class | accuracy |", "| --- | ---: |"]
    rows += [f"| {name} | {100 * a:.1f} % |" for name, a in acc.items()]
    rows.append(f"| **all** | {100 * float(np.mean(labels == predictions)):.2f} % |")
    return "\n".join(rows)


def report(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> str:
    """sklearn's precision / recall / F1 report."""
    return classification_report(labels, predictions, labels=np.arange(len(class_names)),
                                 target_names=list(class_names), digits=4, zero_division=0)
