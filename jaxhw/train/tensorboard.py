"""TensorBoard event files for every run (``tensorboardX``'s writer, no TensorFlow):

* ``train/loss`` at every host read of the losses (the mean over the steps since the last
  read, at the step of the read: one write per read keeps the host's work per step
  small), and ``train/learning_rate`` when the experiment gives its schedule;
* per epoch: ``train/epoch_loss``, ``eval/loss``, ``eval/accuracy``, ``time/train_s``,
  ``time/eval_s``, ``time/compile_s`` and ``time/step_ms``.

The step axis is the optimizer step. In a notebook: ``%load_ext tensorboard`` then
``%tensorboard --logdir <run folder>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from jaxhw.train.loop import Hook

EVENTS_DIR = "tensorboard"  # inside the run folder


class TensorBoard(Hook):
    """Writes a run's scalars to ``folder/tensorboard``; ``first_step`` is the optimizer
    step the run starts from (a resumed run continues the curves), ``learning_rate`` the
    schedule as a function of the step."""

    def __init__(self, folder: str | Path, first_step: int = 0,
                 learning_rate: Callable[[int], float] | None = None):
        from tensorboardX import SummaryWriter  # only where a run writes events
        self.writer = SummaryWriter(str(Path(folder) / EVENTS_DIR), flush_secs=30)
        self.step = self.epoch_start = first_step
        self.learning_rate = learning_rate

    def on_losses(self, epoch, first_step, losses):
        losses = np.asarray(losses, np.float64)
        self.step += len(losses)
        self.writer.add_scalar("train/loss", float(losses.mean()), self.step)
        if self.learning_rate is not None:
            self.writer.add_scalar("train/learning_rate",
                                   float(self.learning_rate(self.step - 1)), self.step)

    def on_epoch_end(self, epoch, record, evaluation):
        step = int(record["step"])
        steps, self.epoch_start = max(step - self.epoch_start, 1), step
        for tag, key in (("train/epoch_loss", "train_loss"), ("eval/loss", "eval_loss"),
                         ("eval/accuracy", "eval_accuracy"), ("time/train_s", "train_time_s"),
                         ("time/eval_s", "eval_time_s"), ("time/compile_s", "compile_time_s")):
            self.writer.add_scalar(tag, float(record[key]), step)
        self.writer.add_scalar("time/step_ms", 1000 * record["train_time_s"] / steps, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
