"""Part 1-3: a Vision Transformer on Fashion-MNIST.

    python -m experiments.vit_fashion_mnist --preset best --data-dir ~/.cache/jaxhw-data
    python -m experiments.vit_fashion_mnist --preset fast      # minutes on a CPU
    python -m experiments.vit_fashion_mnist --preset student   # the handout's recipe
    python -m experiments.vit_fashion_mnist --preset gpu --seeds 3   # on a GPU

Prints the original lines (``Epoch i/N loss: x.xx``, ``Test loss: x.xx``,
``Test accuracy: xx.xx%``), checkpoints every epoch (``--resume``), and writes results and
plots next to the checkpoints. The recipe: AdamW with a linear warm-up, cosine decay and a
strong decoupled weight decay on the weight matrices (not on norms, biases, the class token
or the positional embedding); label smoothing; horizontal flips on the device (garments are
left-right symmetric) and flip averaging at test time; few tokens per image (7x7 patches)
on a CPU. Random crops, random erasing, stochastic depth and dropout are flags. The probes
behind each choice, with their figures, are in docs/results.md (The ViT recipe).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw import cli, config, inference
from jaxhw.config import ConfigError, flag
from jaxhw.data import get_spec
from jaxhw.data.preprocess import Preprocess
from jaxhw.experiment import (Images, RunConfig, check_batch, engine_options, engine_trainer,
                              image_plan, load_images, predict_from, start,
                              train_and_evaluate)
from jaxhw.train.precision import compute_dtype
from jaxhw.models.vit import VisionTransformer
from jaxhw.train import TrainState, classification_loss
from jaxhw.train.printouts import VitPrintouts
from jaxhw.train.schedules import warmup_steps

# Fashion-MNIST train-set pixel mean and standard deviation (pixels scaled to [0, 1]).
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
SPEC = get_spec("fashion_mnist")


@dataclasses.dataclass
class Config(RunConfig):
    patch_size: int = flag(7, "patch side in pixels (must divide 28)", ge=1, le=28)
    embed_dim: int = flag(128, "token width", ge=1)
    depth: int = flag(4, "transformer blocks", ge=1)
    num_heads: int = flag(8, "attention heads (must divide --embed-dim)", ge=1)
    mlp_ratio: float = flag(2.0, "MLP hidden width / embed dim", gt=0)
    dropout: float = flag(0.0, "dropout after embeddings, attention projection and MLP",
                          aliases=["--drop-rate"], ge=0, lt=1)
    drop_path: float = flag(0.0, "stochastic depth: chance of skipping the last block's "
                                 "branches (rising linearly from 0 at the first block)",
                          ge=0, lt=1)
    epochs: int = flag(22, "passes over the 60,000 training images", ge=1)
    batch_size: int = flag(128, "images per step", ge=1)
    optimizer: str = flag("adamw", "adamw (warm-up + cosine schedule) or adam (constant --lr, "
                                   "as in the original)", choices=["adamw", "adam"])
    lr: float = flag(3e-3, "peak learning rate", gt=0)
    weight_decay: float = flag(0.3, "AdamW decoupled weight decay on weight matrices", ge=0)
    warmup: float = flag(1 / 22, "fraction of the steps spent warming up (adamw; at most "
                                 "half; the default is one epoch of 22)", ge=0, le=1)
    label_smoothing: float = flag(0.1, "label smoothing of the cross-entropy targets",
                                   ge=0, lt=1)
    crop_pad: int = flag(0, "random-crop padding in pixels (0 disables cropping)",
                        ge=0, le=14)
    flip: bool = flag(True, "random horizontal flips while training")
    erase: float = flag(0.0, "chance of random erasing: blank one random rectangle (2-25 %% "
                             "of the image) of a training image", ge=0, le=1)
    tta: bool = flag(True, "average the predictions of each test image and its mirror")

    def rules(self) -> None:
        super().rules()
        if 28 % self.patch_size:
            raise ConfigError(f"--patch-size {self.patch_size} does not divide the image size "
                              f"28; use 1, 2, 4, 7, 14 or 28")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"--embed-dim {self.embed_dim} is not divisible by --num-heads "
                              f"{self.num_heads}")
        if int(self.embed_dim * self.mlp_ratio) < 1:
            raise ConfigError(f"--mlp-ratio {self.mlp_ratio} leaves the MLP no hidden unit at "
                              f"--embed-dim {self.embed_dim}")
        check_batch(self, "fashion_mnist")


PRESETS = {
    "best": {},
    "fast": dict(patch_size=7, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, epochs=6,
                 lr=3e-3, weight_decay=0.05, warmup=0.5 / 6, crop_pad=0, tta=False),
    "student": dict(patch_size=4, embed_dim=32, depth=8, num_heads=4, mlp_ratio=4.0, epochs=5,
                    optimizer="adam", lr=5e-3, weight_decay=0.0, label_smoothing=0.0,
                    crop_pad=0, flip=False, tta=False),
    # One GPU (bfloat16): 4x4 patches (49 tokens), a deeper model and a budget the CPU never
    # allowed, with the regularisers that long runs need (crops, erasing, stochastic
    # depth). Its target: docs/results.md.
    "gpu": dict(patch_size=4, embed_dim=128, depth=6, num_heads=8, mlp_ratio=2.0, epochs=25,
                batch_size=512, lr=2e-3, weight_decay=0.1, warmup=2 / 25, crop_pad=2,
                erase=0.25, drop_path=0.1),
    "original": dict(patch_size=4, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
                     epochs=5, optimizer="adam", lr=5e-3, weight_decay=0.0, label_smoothing=0.0,
                     crop_pad=0, flip=False, tta=False),
}


def model_args(cfg: Config) -> dict:
    """The VisionTransformer's arguments (JSON), as ``jaxhw.inference`` rebuilds them."""
    return dict(img_size=28, patch_size=cfg.patch_size, in_chans=1, num_classes=10,
                embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio, drop_rate=cfg.dropout, drop_path_rate=cfg.drop_path)


def build_model(cfg: Config, dtype=jnp.float32) -> VisionTransformer:
    return inference.build_model("vit", model_args(cfg), dtype)


def make_schedule(cfg: Config, steps_per_epoch: int) -> optax.Schedule:
    """adam: the constant --lr; adamw: warm-up (at most half the steps) then cosine."""
    if cfg.optimizer == "adam":
        return optax.constant_schedule(cfg.lr)
    total = cfg.epochs * steps_per_epoch
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, warmup_steps=min(warmup_steps(cfg.warmup, total), total // 2),
        decay_steps=total)  # decay_steps counts the warm-up too


def make_optimizer(cfg: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(cfg.lr)
    schedule = make_schedule(cfg, steps_per_epoch)

    def decay_mask(params):  # weight matrices only; not the class token or position table
        mask = jax.tree.map(lambda p: p.ndim >= 2, params)
        return {**mask, "cls_token": False, "pos_embed": False}

    return optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask)


def attention_plot(cfg: Config, model: VisionTransformer, images: Images
                   ) -> Callable[[TrainState, Path, dict], dict]:
    """What draws the attention maps of 6 random test images (``attention.png``) with a
    trained state, for :class:`~jaxhw.experiment.Plan`'s ``finish``."""
    pick = np.random.default_rng(cfg.seed).choice(len(images.test_y), 6, replace=False)
    shown = images.test_x[pick]

    def draw(state: TrainState, folder: Path, results: dict) -> dict:
        x = Preprocess(FMNIST_MEAN, FMNIST_STD)(jax.random.key(0), jnp.asarray(shown), False)
        logits, inter = model.apply(state.variables(), x, mutable=["intermediates"])
        from jaxhw.plotting import plot_vit_attention
        plot_vit_attention(shown, inter["intermediates"], cfg.patch_size,
                           folder / "attention.png",
                           titles=[f"{SPEC.class_names[t]} -> {SPEC.class_names[p]}" for t, p in
                                   zip(images.test_y[pick], np.asarray(logits).argmax(-1))])
        return {}

    return draw


def predictor(cfg: Config) -> dict:
    """The trained ViT's record (model, preprocessing, test-time views) for
    :func:`jaxhw.load`."""
    return inference.image_record(
        "vit", model_args(cfg), compute_dtype(cfg.dtype), mean=FMNIST_MEAN, std=FMNIST_STD,
        class_names=SPEC.class_names, image_shape=SPEC.image_shape, tta=int(cfg.tta),
        compiler_options=engine_options(cfg))


def run(cfg: Config, name: str = "vit_fashion_mnist") -> dict:
    """Train one configuration and draw its attention maps (or with --predict, use a
    trained one); returns what results.json holds (the sweep uses it too)."""
    if cfg.predict:
        return predict_from(name, cfg)
    dtype = start(cfg, name)
    model = build_model(cfg, dtype)
    images = load_images(cfg, "fashion_mnist", cfg.batch_size)
    steps_per_epoch = len(images.train_y) // cfg.batch_size
    trainer = engine_trainer(
        cfg, model, make_optimizer(cfg, steps_per_epoch),
        loss_fn=classification_loss(cfg.label_smoothing), tta=int(cfg.tta),
        preprocess=Preprocess(FMNIST_MEAN, FMNIST_STD, pad=cfg.crop_pad, flip=cfg.flip,
                              erase=cfg.erase))
    plan = image_plan(name, trainer, images, epochs=cfg.epochs, batch_size=cfg.batch_size,
                      hooks=[VitPrintouts(cfg.epochs)],
                      finish=attention_plot(cfg, model, images),
                      learning_rate=make_schedule(cfg, steps_per_epoch),
                      predictor=predictor(cfg))
    return train_and_evaluate(name, cfg, plan)


def parse(argv=None) -> Config:
    """The command line ``argv`` (default: ``sys.argv[1:]``) as a :class:`Config`, presets
    applied; a bad value ends the program with argparse's one line."""
    return config.parse(Config, __doc__, argv, PRESETS)


def main(argv=None) -> None:
    run(parse(argv))


if __name__ == "__main__":
    cli.run(main)
