"""Part 1-1, Problems 2-3: CNNs built from Inception and residual blocks on CIFAR-10.

    python -m experiments.cifar_inception --data-dir ~/.cache/jaxhw-data            # cpu preset
    python -m experiments.cifar_inception --preset gpu                              # on a GPU

Trains BetterNet (jaxhw/models/cnn.py) by default, or the handout's small Inception CNN
with --model inception_cnn. The recipe is what fast CIFAR-10 trainers use:

* the whole dataset on the device, random crop (pad 4) and horizontal flip done there;
* SGD with Nesterov momentum 0.9 under a one-cycle schedule (linear warm-up to --lr over
  the first --warmup fraction of steps, cosine decay to ~0), which reaches a good optimum
  in few epochs;
* weight decay 5e-4 on the convolution and dense kernels only (not on biases or batch-norm
  scales, where it only fights the normalisation);
* label smoothing 0.1, which keeps the logits from growing to fit noisy labels;
* test-time flip averaging: the logits of each test image and its mirror are averaged.

Presets: ``cpu`` is sized for a 2-core CPU, where XLA's convolution backward pass is slow
at large spatial size x batch: the net drops to 16x16 after one conv and has one residual
block at 8x8 and at 4x4. ``gpu`` is a wider, deeper BetterNet trained longer, aiming at 94 %.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxhw import cli, config
from jaxhw.config import ConfigError, flag
from jaxhw.experiment import Preprocess, RunConfig, start, train_image_classifier
from jaxhw.models import MODELS, get_model
from jaxhw.models.fast_conv import CONV_CHOICES, CONV_HELP, compiler_options
from jaxhw.train import RunningLossPrinter

from experiments.cifar_simple_cnn import printouts  # the original notebook's lines

# CIFAR-10 train-set channel means and standard deviations (of pixels scaled to [0, 1]).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass
class Config(RunConfig):
    model: str = flag("betternet", f"network to train: one of {sorted(MODELS)}")
    stem: int = flag(32, "BetterNet: filters of the 3x3 stem convolution at 32x32")
    widths: str = flag("64,128,256", "BetterNet: channels of the 16x16, 8x8 and 4x4 stages "
                                     "(the Inception module outputs the first)")
    blocks: str = flag("0,1,1", "BetterNet: residual blocks in each stage")
    epochs: int = flag(10, "passes over the training set")
    batch_size: int = flag(128, "images per SGD step")
    lr: float = flag(0.2, "peak learning rate of the one-cycle schedule")
    warmup: float = flag(0.25, "fraction of the steps spent warming up to --lr")
    momentum: float = flag(0.9, "Nesterov momentum")
    weight_decay: float = flag(5e-4, "L2 weight decay on conv and dense kernels")
    label_smoothing: float = flag(0.1, "label smoothing of the cross-entropy targets")
    crop_pad: int = flag(4, "random-crop padding in pixels (0 disables cropping)")
    flip: bool = flag(True, "random horizontal flips while training")
    tta: bool = flag(True, "average the predictions of each test image and its mirror")
    print_every: int = flag(100, "print the mean loss of every this many mini-batches")
    conv: str = flag("auto", CONV_HELP, choices=list(CONV_CHOICES))


PRESETS = {
    "cpu": {},  # the defaults above: ~15 minutes of training on a 2-core CPU
    "gpu": dict(stem=64, widths="128,256,512", blocks="1,2,2", epochs=30, batch_size=512,
                lr=0.4, warmup=0.15),
}


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated integers, got {text!r}") from None


def build_model(cfg: Config, dtype=jnp.float32):
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown --model {cfg.model!r}; choose one of {sorted(MODELS)}")
    fast_conv = CONV_CHOICES[cfg.conv]
    if cfg.model == "betternet":
        return get_model("betternet", stem=cfg.stem, widths=_ints(cfg.widths, "widths"),
                         blocks=_ints(cfg.blocks, "blocks"), fast_conv=fast_conv, dtype=dtype)
    return get_model(cfg.model, fast_conv=fast_conv, dtype=dtype)


def make_optimizer(cfg: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    schedule = optax.cosine_onecycle_schedule(
        transition_steps=cfg.epochs * steps_per_epoch, peak_value=cfg.lr,
        pct_start=cfg.warmup, div_factor=25.0, final_div_factor=1e3)
    only_kernels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: path[-1].key == "kernel", params)
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=only_kernels),
        optax.sgd(schedule, momentum=cfg.momentum, nesterov=True))


def main(argv=None) -> None:
    cfg = config.parse(Config, __doc__, argv, PRESETS)
    dtype = start(cfg)
    train_image_classifier(
        "cifar_inception" if cfg.model == "betternet" else f"cifar_{cfg.model}", cfg,
        dataset="cifar10", model=build_model(cfg, dtype),
        make_tx=lambda steps: make_optimizer(cfg, steps), epochs=cfg.epochs,
        batch_size=cfg.batch_size, label_smoothing=cfg.label_smoothing, tta_flip=cfg.tta,
        preprocess=Preprocess(CIFAR_MEAN, CIFAR_STD, pad=cfg.crop_pad, flip=cfg.flip),
        hooks=[RunningLossPrinter(cfg.print_every)], printouts=printouts,
        compiler_options=compiler_options(CONV_CHOICES[cfg.conv]))


if __name__ == "__main__":
    cli.run(main)
