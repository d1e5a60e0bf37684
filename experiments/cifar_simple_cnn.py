"""Part 1-1, Problem 1: the fixed SimpleCNN trained with the original recipe.

    python -m experiments.cifar_simple_cnn --data-dir ~/.cache/jaxhw-data

Original setup: images normalised to [-1, 1], SGD lr 0.001 momentum 0.9, batch 8,
2 epochs, loss printed every 2000 mini-batches.
"""

from __future__ import annotations

import dataclasses

import optax

from jaxhw import cli, config, inference
from jaxhw.config import flag
from jaxhw import ops
from jaxhw.data import get_spec
from jaxhw.data.preprocess import Preprocess
from jaxhw.experiment import (CONV_HELP, RunConfig, check_batch, engine_options, engine_trainer,
                              image_plan, load_images, predict_from, start,
                              train_and_evaluate)
from jaxhw.train.precision import compute_dtype
from jaxhw.train.printouts import CifarPrintouts
from jaxhw.train.xla_options import cpu_conv_options


@dataclasses.dataclass
class Config(RunConfig):
    epochs: int = flag(2, "passes over the 50,000 training images", ge=1)
    batch_size: int = flag(8, "images per SGD step", ge=1)
    lr: float = flag(0.001, "SGD learning rate", aliases=["--learning-rate"], gt=0)
    momentum: float = flag(0.9, "SGD momentum", ge=0, lt=1)
    print_every: int = flag(2000, "print the mean loss of every this many mini-batches", ge=1)
    conv: str = flag("auto", CONV_HELP, choices=ops.CHOICES)

    def rules(self) -> None:
        super().rules()
        check_batch(self, "cifar10")


PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # to [-1, 1]


def predictor(cfg: Config) -> dict:
    """The trained model's record for :func:`jaxhw.load`."""
    spec = get_spec("cifar10")
    return inference.image_record(
        "simple_cnn", {"conv": cfg.conv}, compute_dtype(cfg.dtype), mean=PREPROCESS.mean,
        std=PREPROCESS.std, class_names=spec.class_names, image_shape=spec.image_shape,
        compiler_options=engine_options(cfg, cpu_conv_options(ops.layers(cfg.conv).fast)))


def run(cfg: Config) -> dict:
    """Train and test the SimpleCNN (or with --predict, use a trained one); returns what
    results.json holds."""
    name = "cifar_simple_cnn"
    if cfg.predict:
        return predict_from(name, cfg)
    start(cfg, name)
    images = load_images(cfg, "cifar10", cfg.batch_size)
    record = predictor(cfg)
    net = inference.build(record)  # the model and XLA options that jaxhw.load rebuilds
    trainer = engine_trainer(cfg, net.model, optax.sgd(cfg.lr, cfg.momentum),
                             compiler_options=net.compiler_options, preprocess=net.preprocess)
    plan = image_plan(name, trainer, images, epochs=cfg.epochs, batch_size=cfg.batch_size,
                      hooks=[CifarPrintouts(cfg.print_every)],
                      learning_rate=lambda step: cfg.lr, predictor=record)
    return train_and_evaluate(name, cfg, plan)


def parse(argv=None) -> Config:
    """The command line ``argv`` (default: ``sys.argv[1:]``) as a :class:`Config`, presets
    applied; a bad value ends the program with argparse's one line."""
    return config.parse(Config, __doc__, argv)


def main(argv=None) -> None:
    run(parse(argv))


if __name__ == "__main__":
    cli.run(main)
