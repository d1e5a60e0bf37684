"""A tiny conv + batch-norm classifier and a learnable synthetic dataset for engine tests."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import numpy as np
import optax

from jaxhw.experiment import Preprocess
from jaxhw.train import Trainer


class TinyNet(nn.Module):
    convolutional: ClassVar[bool] = True  # one step per device call on a CPU, as the CNNs

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(3)(x)


def tiny_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 8, 8, 3] images whose label is their brightest channel."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = images.reshape(n, -1, 3).mean(axis=1).argmax(axis=1).astype(np.int32)
    return images, labels


def tiny_trainer(mesh=None, lr: float = 0.05, compiler_options=None,
                 steps_per_call: int = 0, **kwargs) -> Trainer:
    return Trainer(TinyNet(), optax.sgd(lr, 0.9), mesh=mesh, log_every=4,
                   preprocess=Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, pad=1, flip=True),
                   compiler_options=compiler_options, steps_per_call=steps_per_call, **kwargs)
