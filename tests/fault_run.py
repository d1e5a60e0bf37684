"""A tiny training run through the experiment runner with faults injected at chosen epochs,
for the fault tests (run in a subprocess: ``python -m tests.fault_run FOLDER ...``).

``--nan-after E``: from epoch E + 1 the training images are NaN (with ``--nan-seed S``,
only for seed S), so the loss turns non-finite late and deterministically.
``--fsize-limit-after E``: after epoch E's checkpoint, the process may write no file
byte more (``RLIMIT_FSIZE`` 0, SIGXFSZ ignored): the next write fails with EFBIG, as on a
full disk.
"""

from __future__ import annotations

import argparse
import resource
import signal

import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import cli
from jaxhw.experiment import Images, Plan, RunConfig, image_plan, train_and_evaluate
from jaxhw.train import Hook, Trainer
from tests.tiny import TinyNet, tiny_dataset

EPOCHS, BATCH = 3, 8


class Faults(Hook):
    """Injects the faults at the end of an epoch (after its checkpoint)."""

    def __init__(self, plan: Plan, nan_after: int, nan_seed: int | None,
                 fsize_limit_after: int):
        self.plan, self.clean = plan, plan.train["x"]
        self.nan_after, self.nan_seed = nan_after, nan_seed
        self.fsize_limit_after, self.seed = fsize_limit_after, None

    def start_seed(self, seed: int) -> None:
        self.seed = seed
        self.plan.train["x"] = self.clean

    def on_epoch_end(self, epoch, record, evaluation):
        if epoch == self.nan_after and self.nan_seed in (None, self.seed):
            self.plan.train["x"] = self.clean * jnp.nan
        if epoch == self.fsize_limit_after:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def tiny_plan(args: argparse.Namespace) -> Plan:
    x, y = tiny_dataset(64)
    tx, ty = tiny_dataset(16, seed=1)
    trainer = Trainer(TinyNet(), optax.sgd(0.05, 0.9), log_every=4, on_nan=args.on_nan)
    images = Images(x.astype(np.float32) / 255, y, tx.astype(np.float32) / 255, ty,
                    ("red", "green", "blue"))
    plan = image_plan("fault_run", trainer, images, epochs=args.epochs, batch_size=BATCH,
                      learning_rate=lambda step: 0.05)
    faults = Faults(plan, args.nan_after, args.nan_seed, args.fsize_limit_after)
    plan.hooks = [faults]
    init = plan.init_state
    plan.init_state = lambda seed: (faults.start_seed(seed), init(seed))[1]
    return plan


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--resume", default="no")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--on-nan", default="stop")
    p.add_argument("--nan-after", type=int, default=0)
    p.add_argument("--nan-seed", type=int, default=None)
    p.add_argument("--fsize-limit-after", type=int, default=0)
    args = p.parse_args(argv)
    cfg = RunConfig(checkpoint_dir=args.folder, resume=args.resume, seeds=args.seeds,
                    overwrite=args.overwrite, compile_cache="off", on_nan=args.on_nan)
    cli.run(lambda: train_and_evaluate("fault_run", cfg, tiny_plan(args)))


if __name__ == "__main__":
    main()
