"""Device-side input pipeline: the whole dataset lives on the device, batches are index
slices of a shuffled permutation, and augmentation is vectorised JAX (no Python per image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def subset_indices(num_examples: int, limit: int, seed: int) -> np.ndarray | None:
    """Sorted indices of a random ``limit`` of ``num_examples`` rows drawn with ``seed``, or
    None when ``limit`` is 0 or covers everything. (The dataset files are grouped by
    class, so a subset must be random, never the first rows.)"""
    if not limit or limit >= num_examples:
        return None
    return np.sort(np.random.default_rng(seed).permutation(num_examples)[:limit])


def subset(x: np.ndarray, y: np.ndarray, limit: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Rows :func:`subset_indices` picks of ``x`` and ``y`` (all of them when it picks
    everything)."""
    idx = subset_indices(len(y), limit, seed)
    return (x, y) if idx is None else (x[idx], y[idx])


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


def pad_images(images: jax.Array, pad: int, mode: str = "reflect") -> jax.Array:
    """``[B, H, W, C]`` -> ``[B, H + 2 pad, W + 2 pad, C]``, padded on both spatial sides
    (``mode``: ``reflect`` or ``constant`` zeros)."""
    return jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)


def random_crop(key: jax.Array, images: jax.Array, pad: int, mode: str = "constant"
                ) -> jax.Array:
    """Pad ``[B, H, W, C]`` by ``pad`` pixels (``mode``: ``constant`` zeros, or ``reflect``
    as airbench does) and cut a random H x W window per image."""
    if pad == 0:
        return images
    b, h, w, c = images.shape
    padded = pad_images(images, pad, mode)
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    return jax.vmap(crop)(padded, offsets)


def crop_and_flip(key: jax.Array, images: jax.Array, pad: int = 4, flip: bool = True,
                  mode: str = "constant") -> jax.Array:
    """The standard CIFAR augmentation: random crop with ``pad`` and a horizontal flip."""
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(crop_key, images, pad, mode)
    return random_flip(flip_key, images) if flip else images


def preflip(seed: int, images: np.ndarray) -> np.ndarray:
    """A copy of uint8 ``[N, H, W, C]`` with a random half of the images mirrored (chosen by
    ``seed``): the fixed starting point of alternating flips (see :func:`alternate_flip`)."""
    flip = np.random.default_rng(seed).random(len(images)) < 0.5
    out = np.array(images, copy=True)
    out[flip] = out[flip, :, ::-1]
    return out


def alternate_flip(images: jax.Array, step: jax.Array, steps_per_epoch: int) -> jax.Array:
    """airbench's alternating flips: on top of a fixed random half mirrored once
    (:func:`preflip`), every image is mirrored in the odd epochs (0-based) and not in the
    even ones, so each image is seen both ways in every pair of epochs instead of by chance.
    ``step`` is the 0-based optimizer step of the batch ``[B, H, W, C]``."""
    odd = (step // steps_per_epoch) % 2 == 1
    return jnp.where(odd, images[:, :, ::-1, :], images)


# Level 3's shifts: every translation of up to this many pixels in each direction, the
# ones the cpu preset trains on (--crop-pad 2, reflect padding).
GRID_RADIUS = 2
GRID_SHIFTS = (2 * GRID_RADIUS + 1) ** 2  # grid_view's shifts k at GRID_RADIUS: 25
TTA_LEVELS = (1, 2, 3)


def grid_view(padded: jax.Array, k: jax.Array | int, radius: int = GRID_RADIUS) -> jax.Array:
    """Shift ``k`` of ``(2 * radius + 1) ** 2`` (row-major over the window offsets
    0..2 radius; :func:`grid_shift` says how far it moves the content) of images padded by
    ``radius`` (:func:`pad_images`): ``[B, H + 2r, W + 2r, C]`` -> ``[B, H, W, C]``.
    ``k`` may be traced (a loop index)."""
    side = 2 * radius + 1
    b, hp, wp, c = padded.shape
    return jax.lax.dynamic_slice(padded, (0, k // side, k % side, 0),
                                 (b, hp - 2 * radius, wp - 2 * radius, c))


def grid_shift(k: int, radius: int = GRID_RADIUS) -> tuple[int, int]:
    """(rows, columns) by which :func:`grid_view`'s shift ``k`` moves the image content
    (down and right positive): ``radius`` minus the window's offset."""
    side = 2 * radius + 1
    return radius - k // side, radius - k % side


def tta_views(images: jax.Array, level: int) -> list[tuple[float, jax.Array]]:
    """Test-time views of ``[B, H, W, C]`` and the weight of each view's logits.

    * level 1: the image and its mirror, 1/2 each;
    * level 2 (airbench's): those two at 1/4 each, plus, at 1/8 each, the image shifted
      by one pixel down-right and up-left (reflect padding) and the mirrors of both;
    * level 3: every shift of up to ``GRID_RADIUS`` (2) pixels in each direction (reflect
      padding; 25 shifts, the unshifted image among them) and the mirror of each: 50 views
      at 1/50 each, the whole distribution of 2-pixel translations and flips the cpu
      preset trains on. (:func:`jaxhw.train.steps.eval_logits` loops over the shifts
      rather than building this list, so that the program holds one forward pass.)
    """
    if level not in TTA_LEVELS:
        raise ValueError(f"test-time augmentation level must be one of {TTA_LEVELS}, "
                         f"got {level}")
    mirror = lambda v: v[:, :, ::-1, :]  # noqa: E731
    if level == 1:
        return [(0.5, images), (0.5, mirror(images))]
    if level == 3:
        padded = pad_images(images, GRID_RADIUS)
        shifted = [grid_view(padded, k) for k in range(GRID_SHIFTS)]
        return [(1 / (2 * GRID_SHIFTS), view) for s in shifted for view in (s, mirror(s))]
    _, h, w, _ = images.shape
    padded = pad_images(images, 1)
    shifted = [padded[:, :h, :w], padded[:, 2:h + 2, 2:w + 2]]  # content moved +1 / -1 px
    return ([(0.25, images), (0.25, mirror(images))]
            + [(0.125, view) for s in shifted for view in (s, mirror(s))])


def random_erase(key: jax.Array, images: jax.Array, prob: float,
                 area: tuple[float, float] = (0.02, 0.25),
                 log_aspect: tuple[float, float] = (-1.2, 1.2)) -> jax.Array:
    """Random erasing (Zhong et al., 2017): with probability ``prob`` per image, set one
    random rectangle of ``[B, H, W, C]`` to 0, the mean pixel once the images are normalised.

    The rectangle covers a fraction of the image drawn uniformly from ``area``, with an
    aspect ratio (height / width) whose log is uniform in ``log_aspect``; it is clipped to the
    image. Vectorised: one mask per image, no Python per image.
    """
    if prob <= 0:
        return images
    b, h, w, _ = images.shape
    k_apply, k_area, k_aspect, k_top, k_left = jax.random.split(key, 5)
    frac = jax.random.uniform(k_area, (b,), minval=area[0], maxval=area[1])
    aspect = jnp.exp(jax.random.uniform(k_aspect, (b,), minval=log_aspect[0],
                                        maxval=log_aspect[1]))
    eh = jnp.clip(jnp.round(jnp.sqrt(frac * h * w * aspect)), 1, h).astype(jnp.int32)
    ew = jnp.clip(jnp.round(jnp.sqrt(frac * h * w / aspect)), 1, w).astype(jnp.int32)
    top = jnp.floor(jax.random.uniform(k_top, (b,)) * (h - eh + 1)).astype(jnp.int32)
    left = jnp.floor(jax.random.uniform(k_left, (b,)) * (w - ew + 1)).astype(jnp.int32)
    rows, cols = jnp.arange(h)[None, :], jnp.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])          # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])        # [B, W]
    erase = in_rows[:, :, None] & in_cols[:, None, :]                         # [B, H, W]
    erase &= jax.random.bernoulli(k_apply, prob, (b,))[:, None, None]
    return jnp.where(erase[..., None], 0.0, images)
