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

import time
from pathlib import Path
from typing import Callable

import numpy as np

from jaxhw.files import optional_write
from jaxhw.train.loop import Hook

EVENTS_DIR = "tensorboard"  # inside the run folder


class TensorBoard(Hook):
    """Writes a run's scalars to ``folder/tensorboard``; ``first_step`` is the optimizer
    step the run starts from (a resumed run continues the curves), ``learning_rate`` the
    schedule as a function of the step.

    The events go through tensorboardX's synchronous ``EventsWriter`` (its ``SummaryWriter``
    writes from a thread of its own, where a full disk becomes tracebacks at every flush
    and at exit). The events are optional: a failed write is one warning and the run goes
    on without them."""

    def __init__(self, folder: str | Path, first_step: int = 0,
                 learning_rate: Callable[[int], float] | None = None):
        self.folder = Path(folder) / EVENTS_DIR
        self.writer = None
        self.step = self.epoch_start = first_step
        self.learning_rate = learning_rate

        def open_events():
            from tensorboardX.event_file_writer import EventsWriter
            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = EventsWriter(str(self.folder / "events"))
        self._guard(open_events)

    def _guard(self, write: Callable[[], object]) -> None:
        """``write()``, or after a failure (one warning) nothing more."""
        if not optional_write(f"the TensorBoard events in {self.folder}", write):
            self.writer = None

    def _scalars(self, step: int, values: dict[str, float], flush: bool = False) -> None:
        if self.writer is None:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        def write():
            for tag, value in values.items():
                self.writer.write_event(Event(wall_time=time.time(), step=step,
                                              summary=scalar(tag, value)))
            if flush:
                self.writer.flush()
        self._guard(write)

    def on_losses(self, epoch, first_step, losses):
        losses = np.asarray(losses, np.float64)
        self.step += len(losses)
        values = {"train/loss": float(losses.mean())}
        if self.learning_rate is not None:
            values["train/learning_rate"] = float(self.learning_rate(self.step - 1))
        self._scalars(self.step, values)

    def on_epoch_end(self, epoch, record, evaluation):
        step = int(record["step"])
        steps, self.epoch_start = max(step - self.epoch_start, 1), step
        values = {tag: float(record[key]) for tag, key in (
            ("train/epoch_loss", "train_loss"), ("eval/loss", "eval_loss"),
            ("eval/accuracy", "eval_accuracy"), ("time/train_s", "train_time_s"),
            ("time/eval_s", "eval_time_s"), ("time/compile_s", "compile_time_s"))}
        values["time/step_ms"] = 1000 * record["train_time_s"] / steps
        self._scalars(step, values, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self._guard(self.writer.close)
            self.writer = None
