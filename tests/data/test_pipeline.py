import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.data import (crop_and_flip, epoch_batches, eval_batches, normalize, random_crop,
                        random_flip)


def test_epoch_batches_are_a_permutation_without_the_remainder():
    b = np.asarray(epoch_batches(jax.random.key(0), 103, 10))
    assert b.shape == (10, 10) and b.dtype == np.int32
    assert len(np.unique(b)) == 100 and b.min() >= 0 and b.max() < 103
    other = np.asarray(epoch_batches(jax.random.key(1), 103, 10))
    assert not np.array_equal(b, other)


def test_epoch_batches_rejects_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="exceeds"):
        epoch_batches(jax.random.key(0), 5, 8)


def test_eval_batches_cover_everything_once():
    idx, mask = eval_batches(23, 10)
    assert idx.shape == mask.shape == (3, 10)
    assert sorted(idx[mask > 0].tolist()) == list(range(23))
    assert mask.sum() == 23


def test_normalize_by_hand():
    x = jnp.array([[[[0, 255, 51]]]], jnp.uint8)
    out = normalize(x, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    np.testing.assert_allclose(out[0, 0, 0], [-1.0, 2.0, 0.0], atol=1e-6)


def test_random_crop_takes_a_window_of_the_padded_image():
    images = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1) + 1
    out = np.asarray(random_crop(jax.random.key(3), images, pad=2))
    assert out.shape == images.shape
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for b in range(2):
        windows = [padded[b, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(np.array_equal(out[b], w) for w in windows)
    np.testing.assert_array_equal(random_crop(jax.random.key(3), images, pad=0), images)


def test_random_flip_mirrors_about_half():
    images = jax.random.normal(jax.random.key(0), (200, 4, 5, 3))
    out = np.asarray(random_flip(jax.random.key(1), images))
    same = [np.array_equal(o, i) for o, i in zip(out, np.asarray(images))]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, np.asarray(images))]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 60 < sum(mirrored) < 140


def test_crop_and_flip_is_jittable_and_keyed():
    images = jax.random.normal(jax.random.key(0), (8, 32, 32, 3))
    f = jax.jit(crop_and_flip)
    a, b = f(jax.random.key(5), images), f(jax.random.key(5), images)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, f(jax.random.key(6), images))


def test_random_erase_blanks_one_rectangle_in_about_prob_of_the_images():
    from jaxhw.data import random_erase

    images = jnp.ones((400, 12, 10, 2))
    out = np.asarray(random_erase(jax.random.key(5), images, prob=0.5))
    erased = out[..., 0] == 0                                   # [B, H, W]
    assert (out[..., 0] == out[..., 1]).all()                   # all channels alike
    hit = erased.any(axis=(1, 2))
    assert 0.4 < hit.mean() < 0.6
    for mask in erased[hit][:50]:                               # each one a filled rectangle
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == len(rows) * len(cols)
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        assert mask.mean() <= 0.35                               # area 2-25 %, after rounding
    np.testing.assert_array_equal(random_erase(jax.random.key(5), images, 0.0), images)
