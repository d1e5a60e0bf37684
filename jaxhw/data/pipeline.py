"""Device-side input pipeline: the whole dataset lives on the device, batches are index
slices of a shuffled permutation, and augmentation is vectorised JAX (no Python per image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Shuffled example indices for one epoch, ``[steps, batch_size]`` int32.

    The last ``num_examples % batch_size`` examples of the permutation are dropped, so every
    training step sees a full batch (and compiles once).
    """
    if batch_size > num_examples:
        raise ValueError(f"batch size {batch_size} exceeds the {num_examples} training examples")
    steps = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)
    return perm[: steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


def eval_batches(num_examples: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """In-order indices ``[steps, batch_size]`` covering every example once, and a float
    mask of the same shape that is 0 on the padding which fills the last batch."""
    steps = -(-num_examples // batch_size)
    flat = np.arange(steps * batch_size)
    mask = (flat < num_examples).astype(np.float32)
    idx = np.where(flat < num_examples, flat, 0).astype(np.int32)
    return idx.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def normalize(images: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """uint8 ``[B, H, W, C]`` -> float32 ``(x / 255 - mean) / std`` per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
    """Mirror each image of ``[B, H, W, C]`` left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1, :], images)


def random_crop(key: jax.Array, images: jax.Array, pad: int) -> jax.Array:
    """Zero-pad ``[B, H, W, C]`` by ``pad`` pixels and cut a random H x W window per image."""
    if pad == 0:
        return images
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def crop_and_flip(key: jax.Array, images: jax.Array, pad: int = 4, flip: bool = True) -> jax.Array:
    """The standard CIFAR augmentation: random crop with ``pad`` and a horizontal flip."""
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(crop_key, images, pad)
    return random_flip(flip_key, images) if flip else images
