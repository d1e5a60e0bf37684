"""Metrics computed on the host from predictions, and the original printouts."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix
from tqdm.auto import tqdm

from jaxhw.train.loop import Hook


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


class RunningLossPrinter(Hook):
    """The original notebooks' ``[epoch, step] loss: x.xxx``, averaged over every
    ``every`` mini-batches (steps are counted from 1 within an epoch)."""

    def __init__(self, every: int = 2000, fmt: str = "[{epoch}, {step:5d}] loss: {loss:.3f}"):
        self.every, self.fmt = every, fmt
        self._sum, self._count = 0.0, 0

    def on_losses(self, epoch: int, first_step: int, losses: np.ndarray) -> None:
        for k, loss in enumerate(losses):
            self._sum += float(loss)
            self._count += 1
            step = first_step + k + 1
            if step % self.every == 0:
                tqdm.write(self.fmt.format(epoch=epoch, step=step, loss=self._sum / self._count))
                self._sum, self._count = 0.0, 0

    def on_epoch_end(self, epoch: int, record: dict, evaluation) -> None:
        self._sum, self._count = 0.0, 0
