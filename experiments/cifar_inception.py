"""Part 1-1, Problems 2-3: BetterNet (Inception and residual blocks) on CIFAR-10.

    python -m experiments.cifar_inception --data-dir ~/.cache/jaxhw-data   # cpu preset
    python -m experiments.cifar_inception --preset gpu --seeds 5           # on a GPU
    python -m experiments.cifar_inception --model inception_cnn            # the handout's net

cpu (the defaults): a frozen 2x2 patch-whitening stem, the Inception module (64 channels),
residual blocks at 8x8 (96) and 4x4 (192); Nesterov SGD under a one-cycle schedule for 14
epochs; alternating flips and 2-pixel reflected translations; 50 test-time views at the end.
gpu: an airbench94-style speed run at 0.96x airbench94's work per image (compute, then
pool: Inception at 31x31, ResidualBlocks to 128 at 15x15 and to 256 at 7x7 and 3x3; batch
1024, 12 epochs, GELU, lookahead, label smoothing 0.2, 64x lr on batch-norm biases, six
test-time views, bfloat16 or float16).
Every ingredient is a flag; ``python -m benchmarks.cifar_ablation`` switches each off.
Results: docs/results.md.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import cli, config, inference, ops
from jaxhw.config import ConfigError, Items, Domain, flag
from jaxhw.data import get_spec, normalize
from jaxhw.data.pipeline import preflip
from jaxhw.data.preprocess import Preprocess
from jaxhw.experiment import (CONV_HELP, RunConfig, check_batch, engine_options,
                              engine_trainer, image_plan, load_images, predict_from, start,
                              train_and_evaluate)
from jaxhw.train.precision import compute_dtype
from jaxhw.models import MODELS
from jaxhw.models.cnn import whitening_kernel
from jaxhw.train import TrainState, classification_loss, replicate
from jaxhw.train.lookahead import Lookahead
from jaxhw.train.schedules import warmup_steps
from jaxhw.train.xla_options import cpu_conv_options

from jaxhw.train.printouts import CifarPrintouts

# CIFAR-10 train-set channel means and standard deviations (of pixels scaled to [0, 1]).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


# --tta -> the views of jaxhw.data.tta_views (0 to 3); --epoch-tta -> the per-epoch
# evaluation's views (None: the final evaluation's)
TTA = {"none": 0, "mirror": 1, "six": 2, "grid": 3}
EPOCH_TTA = {"final": None, "mirror": 1, "none": 0}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))  # the flag's domain has checked it


@dataclasses.dataclass
class Config(RunConfig):
    model: str = flag("betternet", "network to train", choices=sorted(MODELS))
    stem: int = flag(32, "BetterNet: filters of the 3x3 stem convolution at 32x32 (not used "
                         "with --whiten)", ge=1)
    widths: str = flag("64,96,192", "BetterNet: channels of the three stages (the Inception "
                                     "module outputs the first)",
                       items=Items(Domain(ge=1, integer=True)))
    blocks: str = flag("0,1,1", "BetterNet: residual blocks in each stage",
                       items=Items(Domain(ge=0, integer=True)))
    downsample: str = flag("stride", "BetterNet: how the resolution halves: stride (a 2x2 "
                                     "max pool before the Inception module, stride 2 in the "
                                     "first block of every later stage) or pool (airbench's "
                                     "order: a 2x2 max pool after the Inception module and "
                                     "after the first block of every later stage)",
                           choices=["stride", "pool"])
    whiten: bool = flag(True, "BetterNet: a frozen 2x2 patch-whitening stem (24 filters) set "
                              "from 5,000 training images instead of the 3x3 stem (--no-whiten)")
    whiten_bias_epochs: int = flag(3, "with --whiten: epochs during which the whitening "
                                      "stem's bias trains before it is frozen too", ge=0)
    head_pool: str = flag("avg", "BetterNet: global pooling before the dense head",
                          choices=["avg", "max"])
    head_scale: float = flag(1.0, "BetterNet: constant multiplying the logits (the dense head "
                                  "has no bias when it is not 1)", gt=0)
    act: str = flag("relu", "activation of every block", choices=["relu", "gelu"])
    bn_momentum: float = flag(0.9, "batch-norm running-average momentum (flax's convention: "
                                   "the weight of the old average; PyTorch's 0.1 is 0.9)",
                              ge=0, lt=1)
    bn_eps: float = flag(1e-5, "batch-norm epsilon", gt=0)
    bn_scale: bool = flag(True, "learn a batch-norm scale (off: only the bias trains)")
    epochs: int = flag(14, "passes over the training set", ge=1)
    batch_size: int = flag(128, "images per SGD step", ge=1)
    lr: float = flag(0.2, "peak learning rate (of the mean loss over the batch)",
                     gt=0)
    schedule: str = flag("onecycle", "onecycle (linear warm-up over --warmup of the steps, "
                                     "cosine decay to ~0) or linear (linear from 0.2 x --lr "
                                     "up to --lr over --warmup, then down to 0.07 x --lr)",
                         choices=["onecycle", "linear"])
    warmup: float = flag(0.25, "fraction of the steps spent warming up to --lr",
                         ge=0, le=1)
    momentum: float = flag(0.9, "Nesterov momentum", ge=0, lt=1)
    weight_decay: float = flag(5e-4, "L2 weight decay, added to the gradient", ge=0)
    decay: str = flag("kernels", "what --weight-decay applies to: kernels (conv and dense) "
                                 "or all trained parameters", choices=["kernels", "all"])
    bn_bias_lr: float = flag(1.0, "learning-rate multiplier for batch-norm biases (their "
                                  "weight decay is divided by it, so its strength is kept)",
                              gt=0)
    label_smoothing: float = flag(0.0, "label smoothing of the cross-entropy targets",
                                   ge=0, lt=1)
    crop_pad: int = flag(2, "random-crop padding in pixels (0 disables cropping)",
                        ge=0, le=16)
    crop_mode: str = flag("reflect", "padding of the random crop: constant (zeros) or "
                                      "reflect", choices=["constant", "reflect"])
    flip: bool = flag(True, "random horizontal flips while training")
    alternate_flip: bool = flag(True, "airbench's alternating flips instead of random ones: "
                                       "a random half mirrored once, then every image mirrored "
                                       "in every other epoch")
    lookahead: bool = flag(False, "airbench's lookahead weight averaging (every 5 steps from "
                                  "epoch 3 on)")
    tta: str = flag("grid", "test-time views of the final evaluation: none (the image), "
                            "mirror (and its mirror), six (airbench's: both also shifted "
                            "1 pixel down-right and up-left) or grid (every shift of up to "
                            "2 pixels, reflect padded, and its mirror: 50 views)",
                    choices=list(TTA))
    epoch_tta: str = flag("mirror", "test-time views of the evaluation after every epoch: "
                                   "final (those of the final evaluation), mirror (the image "
                                   "and its mirror) or none (the image alone), never more "
                                   "than the final evaluation's; each view is one more "
                                   "forward pass over the test set per epoch",
                          choices=list(EPOCH_TTA))
    print_every: int = flag(100, "print the mean loss of every this many mini-batches",
                           ge=1)
    conv: str = flag("auto", CONV_HELP, choices=ops.CHOICES)

    def rules(self) -> None:
        super().rules()
        widths, blocks = _ints(self.widths), _ints(self.blocks)
        if len(widths) != len(blocks) or not 1 <= len(widths) <= 4:
            raise ConfigError(f"--widths and --blocks need the same number of stages, 1 to 4; "
                              f"got {len(widths)} and {len(blocks)}")
        if widths[0] % 16:
            raise ConfigError(f"--widths: the first stage's width (the Inception module's "
                              f"output, split 1/2, 1/4, 1/8, 1/8 over its branches) must be "
                              f"a multiple of 16, got {widths[0]}")
        check_batch(self, "cifar10")


PRESETS = {
    "cpu": {},  # the defaults above, sized for a 2-core CPU (measured: docs/results.md)
    # airbench94's recipe (its hyperparameters converted from a summed loss and PyTorch's
    # conventions; the ablation, benchmarks.cifar_ablation, measures each ingredient):
    "gpu": dict(
        whiten=True,             # frozen whitening stem: the first layer needs no training
        # airbench's compute-then-pool order: Inception (64) at 31x31, pool; a ResidualBlock
        # to 128 at 15x15, pool; one to 256 at 7x7, pool; one more at 3x3 (0.96x its work)
        downsample="pool", widths="64,128,256", blocks="0,1,2",
        head_pool="max", head_scale=1 / 9,  # airbench's head: max pool, logits / 9
        act="gelu",
        bn_momentum=0.6, bn_eps=1e-12, bn_scale=False,  # fast-moving statistics, bias only
        epochs=12, batch_size=1024,  # airbench94 trains 9.9 epochs; this net needs 12
        # airbench: lr 11.5 per 1024 examples / (1 + 1 / (1 - momentum)) on a summed loss
        # = 1.5 on the mean loss; its weight decay 0.0153 per 1024 examples is an L2 of
        # 1.33e-3 of the mean loss on every parameter, and 1/64 of that on BN biases.
        lr=1.5, momentum=0.85, weight_decay=1.33e-3, decay="all", bn_bias_lr=64.0,
        schedule="linear", warmup=0.23,
        label_smoothing=0.2,
        crop_pad=2, crop_mode="reflect", alternate_flip=True,
        lookahead=True,
        tta="six",                           # airbench's six views,
        epoch_tta="final",                   # also after every epoch
        print_every=1000,
    ),
}


# Where what left the code went (one line instead of argparse's "invalid choice").
EARLIER_PRESETS = "earlier presets: docs/history.md names the commit that runs them"
RETIRED = {flag_: "--tta none|mirror|six|grid chooses the test-time views" for flag_ in
           ("--no-tta", "--tta-translate", "--no-tta-translate", "--tta-grid",
            "--no-tta-grid")}


def model_args(cfg: Config) -> dict:
    """The model family's arguments (JSON), as ``jaxhw.inference`` rebuilds them."""
    if cfg.model != "betternet":
        return {"conv": cfg.conv}
    return dict(conv=cfg.conv, stem=cfg.stem, widths=list(_ints(cfg.widths)),
                blocks=list(_ints(cfg.blocks)), downsample=cfg.downsample,
                bn=[cfg.bn_momentum, cfg.bn_eps, cfg.bn_scale], act=cfg.act, whiten=cfg.whiten,
                head_pool=cfg.head_pool, head_scale=cfg.head_scale,
                head_bias=cfg.head_scale == 1.0)


def build_model(cfg: Config, dtype=jnp.float32):
    return inference.build_model(cfg.model, model_args(cfg), dtype)


def param_groups(params) -> dict:
    """The optimizer group of every parameter: ``frozen`` (the whitening kernel),
    ``whiten_bias``, ``bn_bias``, ``kernel`` (conv and dense kernels) or ``other``."""
    def group(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        if names[0] == "whiten":
            return "frozen" if names[-1] == "kernel" else "whiten_bias"
        if names[-1] == "kernel":
            return "kernel"
        if names[-1] == "bias" and names[-2].startswith("BatchNorm"):
            return "bn_bias"
        return "other"
    return jax.tree_util.tree_map_with_path(group, params)


def make_schedule(cfg: Config, total_steps: int) -> optax.Schedule:
    warm = max(warmup_steps(cfg.warmup, total_steps), 1)
    if cfg.schedule == "linear":  # airbench's: 0.2 -> 1 over the warm-up, then -> 0.07
        return optax.join_schedules([
            optax.linear_schedule(0.2 * cfg.lr, cfg.lr, warm),
            optax.linear_schedule(cfg.lr, 0.07 * cfg.lr, max(total_steps - warm, 1))], [warm])
    return optax.cosine_onecycle_schedule(
        transition_steps=total_steps, peak_value=cfg.lr, pct_start=cfg.warmup,
        div_factor=25.0, final_div_factor=1e3)


def make_optimizer(cfg: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Nesterov SGD with L2 weight decay per parameter group (see :func:`param_groups`)."""
    schedule = make_schedule(cfg, cfg.epochs * steps_per_epoch)
    decay_all = cfg.decay == "all"

    def sgd(decay: float, lr_scale: float = 1.0) -> optax.GradientTransformation:
        parts = [optax.add_decayed_weights(decay)] if decay else []
        return optax.chain(*parts, optax.sgd(lambda step: lr_scale * schedule(step),
                                             momentum=cfg.momentum, nesterov=True))

    bias_steps = cfg.whiten_bias_epochs * steps_per_epoch
    frozen_after = optax.scale_by_schedule(lambda step: (step < bias_steps).astype(jnp.float32))
    groups = {
        "frozen": optax.set_to_zero(),
        "whiten_bias": optax.chain(sgd(cfg.weight_decay if decay_all else 0.0), frozen_after),
        "kernel": sgd(cfg.weight_decay),
        "bn_bias": sgd(cfg.weight_decay / cfg.bn_bias_lr if decay_all else 0.0, cfg.bn_bias_lr),
        "other": sgd(cfg.weight_decay if decay_all else 0.0),
    }
    return optax.multi_transform(groups, param_groups)


def whitening_init(cfg: Config, train_images: np.ndarray
                   ) -> Callable[[TrainState], TrainState]:
    """The whitening stem's kernel from 5,000 random training images (normalised as the
    model sees them), computed once; returns what sets it in a fresh train state."""
    pick = np.random.default_rng(cfg.seed).permutation(len(train_images))[:5000]
    kernel = whitening_kernel(np.asarray(normalize(train_images[pick], CIFAR_MEAN, CIFAR_STD)))

    def set_kernel(state: TrainState) -> TrainState:
        params = jax.device_get(state.params)
        if params["whiten"]["kernel"].shape != kernel.shape:
            raise ConfigError(f"whitening kernel {kernel.shape} does not fit the stem "
                              f"{params['whiten']['kernel'].shape}")
        params = {**params, "whiten": {**params["whiten"], "kernel": kernel}}
        mesh = state.step.sharding.mesh
        state = state.replace(params=replicate(params, mesh))
        if state.slow:  # the lookahead's copy starts from the same weights (own buffers)
            state = state.replace(slow={**state.slow, "params": replicate(params, mesh)})
        return state

    return set_kernel


def predictor(cfg: Config) -> dict:
    """The trained network's record for :func:`jaxhw.load`: model, preprocessing,
    test-time views and XLA options."""
    spec = get_spec("cifar10")
    return inference.image_record(
        cfg.model, model_args(cfg), compute_dtype(cfg.dtype), mean=CIFAR_MEAN, std=CIFAR_STD,
        class_names=spec.class_names, image_shape=spec.image_shape, tta=tta_level(cfg),
        compiler_options=engine_options(cfg, cpu_conv_options(ops.layers(cfg.conv).fast)))


def tta_level(cfg: Config) -> int:
    """Test-time views of the final evaluation (``jaxhw.data.tta_views``'s level)."""
    return TTA[cfg.tta]


def epoch_tta_level(cfg: Config) -> int | None:
    """Test-time views of the evaluation after every epoch (None: the final evaluation's),
    at most the final evaluation's (``--tta none`` evaluates the plain images throughout)."""
    views = EPOCH_TTA[cfg.epoch_tta]
    return None if views is None or views >= tta_level(cfg) else views


def run(cfg: Config) -> dict:
    """Train and test the chosen network (or with --predict, use a trained one); returns
    what results.json holds."""
    name = "cifar_inception" if cfg.model == "betternet" else f"cifar_{cfg.model}"
    if cfg.predict:
        return predict_from(name, cfg)
    start(cfg, name)
    record = predictor(cfg)
    net = inference.build(record)  # the model and XLA options that jaxhw.load rebuilds
    images = load_images(cfg, "cifar10", cfg.batch_size)
    steps_per_epoch = len(images.train_y) // cfg.batch_size
    # The whitening stem comes from the images as loaded, before any flip.
    set_stem = (whitening_init(cfg, images.train_x) if cfg.whiten and cfg.model == "betternet"
                else None)
    if cfg.alternate_flip:  # a random half of the images is mirrored once, for good
        images = dataclasses.replace(images, train_x=preflip(cfg.seed, images.train_x))
    trainer = engine_trainer(
        cfg, net.model, make_optimizer(cfg, steps_per_epoch),
        compiler_options=net.compiler_options,
        loss_fn=classification_loss(cfg.label_smoothing),
        preprocess=Preprocess(CIFAR_MEAN, CIFAR_STD, pad=cfg.crop_pad, flip=cfg.flip,
                              pad_mode=cfg.crop_mode, alternate_flip=cfg.alternate_flip,
                              steps_per_epoch=steps_per_epoch),
        tta=tta_level(cfg), epoch_tta=epoch_tta_level(cfg),
        lookahead=Lookahead(cfg.epochs * steps_per_epoch, steps_per_epoch) if cfg.lookahead
        else None)
    plan = image_plan(name, trainer, images, epochs=cfg.epochs, batch_size=cfg.batch_size,
                      hooks=[CifarPrintouts(cfg.print_every)], adjust=set_stem,
                      learning_rate=make_schedule(cfg, cfg.epochs * steps_per_epoch),
                      predictor=record)
    return train_and_evaluate(name, cfg, plan)


def parse(argv=None) -> Config:
    """The command line ``argv`` (default: ``sys.argv[1:]``) as a :class:`Config`, presets
    applied; a bad value ends the program with argparse's one line."""
    return config.parse(Config, __doc__, argv, PRESETS, RETIRED, EARLIER_PRESETS)


def main(argv=None) -> None:
    run(parse(argv))


if __name__ == "__main__":
    cli.run(main)
