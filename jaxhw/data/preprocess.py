"""Device-side preprocessing of image batches: normalisation and training augmentation."""

from __future__ import annotations

import dataclasses

import jax

from jaxhw.data.pipeline import (alternate_flip, crop_and_flip, normalize, random_crop,
                                 random_erase)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Device-side ``(key, uint8 images, train, step) -> float images``: scale to [0, 1],
    normalise per channel, and when training apply random erasing (probability ``erase``),
    a random crop (``pad`` pixels of ``pad_mode`` padding) and flips: random ones
    (``flip``), or airbench's alternating ones (``alternate_flip``: the training images
    are mirrored for a random half once, ``jaxhw.data.pipeline.preflip``, then all of
    them in every odd epoch; ``steps_per_epoch`` says where epochs end)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 0
    flip: bool = False
    erase: float = 0.0
    pad_mode: str = "constant"  # or "reflect"
    alternate_flip: bool = False
    steps_per_epoch: int = 0

    def __call__(self, key: jax.Array, images: jax.Array, train: bool, step=None) -> jax.Array:
        x = normalize(images, self.mean, self.std)
        if not train:
            return x
        if self.erase > 0:  # split only here, so runs without erasing keep their keys
            key, erase_key = jax.random.split(key)
            x = random_erase(erase_key, x, self.erase)
        if self.alternate_flip:
            if step is None or self.steps_per_epoch < 1:
                raise ValueError("alternating flips need the step and steps_per_epoch")
            x = alternate_flip(random_crop(key, x, self.pad, self.pad_mode), step,
                               self.steps_per_epoch)
        elif self.pad or self.flip:
            x = crop_and_flip(key, x, self.pad, self.flip, self.pad_mode)
        return x
