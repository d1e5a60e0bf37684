"""The one training engine: state, steps, the Trainer (an epoch, an evaluation), checkpoints,
metrics, data parallelism."""

from jaxhw.train.checkpoint import (CheckpointError, Checkpoints, check_run, open_run,
                                    write_json)
from jaxhw.train.loop import Data, EvalResult, Hook, Trainer
from jaxhw.train.metrics import confusion, per_class_accuracy, per_class_table, report
from jaxhw.train.printouts import RunningLossPrinter
from jaxhw.train.parallel import make_mesh, replicate
from jaxhw.train.state import TrainState, count_params, create_train_state
from jaxhw.train.steps import (classification_loss, make_eval_step, make_train_step,
                               sequence_loss)

__all__ = [
    "CheckpointError", "Checkpoints", "Data", "EvalResult", "Hook", "RunningLossPrinter",
    "TrainState", "Trainer", "check_run", "classification_loss", "confusion", "count_params",
    "create_train_state", "make_eval_step", "make_mesh", "make_train_step", "open_run",
    "per_class_accuracy", "per_class_table", "replicate", "report", "sequence_loss",
    "write_json",
]
