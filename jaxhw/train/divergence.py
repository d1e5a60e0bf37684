"""A run whose loss stops being finite ends at the first host read that sees it.

:class:`Diverged` carries where it happened; the experiment runner adds the learning rate
and the epoch whose checkpoint is kept, and the command line prints it as one line and exits
with :data:`EXIT_DIVERGED`.
"""

from __future__ import annotations

import math

EXIT_DIVERGED = 3  # the exit status of a run stopped by a non-finite loss
ON_NAN = ("stop", "continue")


class Diverged(RuntimeError):
    """The train or evaluation loss became non-finite at ``step`` (1-based, counted over
    the run) in ``epoch`` of ``epochs``; ``value`` is the loss (nan or inf), ``what``
    ``"train loss"``, ``"test loss"`` or a sentence of its own."""

    def __init__(self, what: str, value: float, step: int, epoch: int, epochs: int,
                 detail: str = ""):
        self.what, self.value, self.step = what, value, step
        self.epoch, self.epochs, self.detail = epoch, epochs, detail
        self.learning_rate: float | None = None
        self.kept_epoch: int | None = None
        super().__init__(self.message())

    def message(self) -> str:
        lr = ("" if self.learning_rate is None or not math.isfinite(self.learning_rate)
              else f", learning rate {self.learning_rate:.3g}")
        kept = ("no checkpoint is kept (it diverged in the first epoch)"
                if self.kept_epoch is None else
                f"the checkpoint of epoch {self.kept_epoch} is kept: rerun with the change "
                f"and --resume to continue from it")
        detail = f" ({self.detail})" if self.detail else ""
        return (f"diverged: {self.what} is {self.value} at step {self.step} (epoch "
                f"{self.epoch} of {self.epochs}{lr}){detail}; try a lower --lr, more warm-up "
                f"or --dtype float32 (--on-nan continue trains on regardless); {kept}")

    def completed(self, learning_rate: float | None, kept_epoch: int | None) -> "Diverged":
        """The same fault with the run's learning rate at ``step`` and its kept epoch."""
        self.learning_rate, self.kept_epoch = learning_rate, kept_epoch
        self.args = (self.message(),)
        return self

    def record(self) -> dict:
        """What results.json keeps of it."""
        return {"what": self.what, "value": str(self.value), "step": self.step,
                "epoch": self.epoch, "learning_rate": self.learning_rate,
                "kept_epoch": self.kept_epoch, "message": self.message()}


def rerun_advice(diverged: dict) -> str:
    """What to do with a run folder whose results.json records ``diverged`` (its
    :meth:`Diverged.record`)."""
    kept = diverged.get("kept_epoch")
    if kept is None:
        return "no epoch was kept: rerun it with a lower --lr and --overwrite"
    return (f"rerun it with a lower --lr and --resume (it continues from epoch {kept}), or "
            f"--overwrite")


def diverged_run(folder, results: dict, outcome: str) -> str | None:
    """The line for a run folder whose ``results`` (its results.json) record a run that
    diverged, saying ``outcome`` ("did not finish", ...) and what to do; None for any
    other run."""
    if results.get("status") != "diverged":
        return None
    d = results.get("diverged", {})
    return (f"the run in {folder} diverged (step {d.get('step')}, epoch {d.get('epoch')}) "
            f"and {outcome}; {rerun_advice(d)}")


class SeedsDiverged(RuntimeError):
    """Some seeds of a ``--seeds`` run (or settings of a sweep) diverged; the others
    finished and their summary is written."""
