"""The handout's printed lines, one hook per part, so each experiment prints what the
original notebook printed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from jaxhw.train.loop import Hook
from jaxhw.train.metrics import report


class RunningLossPrinter(Hook):
    """``[epoch, step] loss: x.xxx``, averaged over every ``every`` mini-batches (steps are
    counted from 1 within an epoch)."""

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


class CifarPrintouts(RunningLossPrinter):
    """Part 1-1: ``[epoch, step] loss: x.xxx`` every ``every`` mini-batches,
    ``Finished Training``, ``Saved Trained Model`` and ``Accuracy of the network on the
    10000 test images: NN %``."""

    def on_train_end(self, directory):
        print("Finished Training")
        print("Saved Trained Model")

    def on_test(self, result):
        print(f"Accuracy of the network on the {len(result.labels)} test images: "
              f"{int(100 * result.accuracy)} %")


class DemoPrinter(Hook):
    """Part 1-2's demo: ``Epoch: N, Loss: x`` (one full-batch step per "epoch")."""

    def on_losses(self, epoch, first_step, losses):
        for loss in losses:
            print(f"Epoch: {epoch}, Loss: {loss}")


class VitPrintouts(Hook):
    """Part 1-3: ``Epoch i/N loss: x.xx`` after each epoch, then ``Test loss: x.xx`` and
    ``Test accuracy: xx.xx%``."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, epoch, record, evaluation):
        print(f"Epoch {epoch}/{self.epochs} loss: {record['train_loss']:.2f}")

    def on_test(self, result):
        print(f"Test loss: {result.loss:.2f}")
        print(f"Test accuracy: {100 * result.accuracy:.2f}%")


class ReportPrinter(Hook):
    """Part 1-4: per epoch the validation accuracy and sklearn's precision / recall / F1
    report; finally ``Test Accuracy: 0.xxxx`` and the test report."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = list(class_names)

    def on_epoch_end(self, epoch, record, evaluation):
        tqdm.write(f"Epoch {epoch}: Validation Accuracy: {evaluation.accuracy:.4f}")
        tqdm.write(report(evaluation.labels, evaluation.predictions, self.class_names))

    def on_test(self, result):
        print(f"Test Accuracy: {result.accuracy:.4f}")
        print(report(result.labels, result.predictions, self.class_names))
