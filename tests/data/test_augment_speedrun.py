"""airbench's augmentations: reflect-padded translations, alternating flips, test-time views."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.data import random_crop
from jaxhw.data.pipeline import alternate_flip, grid_shift, preflip, tta_views
from jaxhw.data.preprocess import Preprocess
from jaxhw.train.steps import eval_logits


def _images(b=3, h=5, w=6, c=2):
    return jnp.arange(b * h * w * c, dtype=jnp.float32).reshape(b, h, w, c)


def test_reflect_crop_takes_windows_of_the_reflect_padded_image():
    x = _images()
    out = random_crop(jax.random.key(0), x, 2, mode="reflect")
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(len(x)):
        windows = [padded[i, a:a + 5, b:b + 6] for a in range(5) for b in range(5)]
        assert any(np.array_equal(np.asarray(out[i]), w) for w in windows)
    # reflect padding never introduces zeros the image does not have
    assert np.count_nonzero(np.asarray(out) == 0) <= np.count_nonzero(np.asarray(x) == 0)


def test_preflip_mirrors_a_seeded_half_and_keeps_the_rest():
    x = np.random.default_rng(0).integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    y = preflip(1, x)
    mirrored = np.array([np.array_equal(y[i], x[i, :, ::-1]) and not np.array_equal(x[i], x[i, :, ::-1])
                         for i in range(len(x))])
    kept = np.array([np.array_equal(y[i], x[i]) for i in range(len(x))])
    assert np.all(mirrored | kept) and 70 < mirrored.sum() < 130
    assert np.array_equal(preflip(1, x), y) and not np.array_equal(preflip(2, x), y)
    assert np.array_equal(x, np.random.default_rng(0).integers(0, 256, (200, 4, 4, 3), dtype=np.uint8))


@pytest.mark.parametrize("step, mirrored", [(0, False), (9, False), (10, True), (19, True),
                                            (20, False), (35, True)])
def test_alternate_flip_mirrors_everything_in_odd_epochs(step, mirrored):
    x = _images()
    out = alternate_flip(x, jnp.int32(step), steps_per_epoch=10)
    assert np.array_equal(np.asarray(out), np.asarray(x[:, :, ::-1] if mirrored else x))


def test_preprocess_alternates_by_the_step_and_needs_it():
    pre = Preprocess((0.0,), (1 / 255,), alternate_flip=True, steps_per_epoch=4)
    x = jnp.arange(12, dtype=jnp.uint8).reshape(1, 2, 6, 1)
    even = pre(jax.random.key(0), x, True, step=jnp.int32(3))
    odd = pre(jax.random.key(0), x, True, step=jnp.int32(4))
    assert np.array_equal(np.asarray(even), np.asarray(x, np.float32))
    assert np.array_equal(np.asarray(odd), np.asarray(x[:, :, ::-1], np.float32))
    assert np.array_equal(np.asarray(pre(jax.random.key(0), x, False)), np.asarray(x, np.float32))
    with pytest.raises(ValueError, match="step"):
        pre(jax.random.key(0), x, True)


def test_tta_level_1_is_the_image_and_its_mirror():
    x = _images()
    views = tta_views(x, 1)
    assert [w for w, _ in views] == [0.5, 0.5]
    assert np.array_equal(views[0][1], x) and np.array_equal(views[1][1], x[:, :, ::-1])


def test_tta_level_2_is_airbenchs_six_views():
    x = _images()
    views = tta_views(x, 2)
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    assert sum(w for w, _ in views) == 1.0
    padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    down_right, up_left = padded[:, :5, :6], padded[:, 2:7, 2:8]
    expected = [x, x[:, :, ::-1], down_right, down_right[:, :, ::-1], up_left, up_left[:, :, ::-1]]
    for (_, view), want in zip(views, expected):
        assert np.array_equal(np.asarray(view), np.asarray(want))
    # the shifted views really move the content by one pixel
    assert np.array_equal(down_right[:, 1:, 1:], np.asarray(x)[:, :-1, :-1])
    assert np.array_equal(up_left[:, :-1, :-1], np.asarray(x)[:, 1:, 1:])
    with pytest.raises(ValueError, match="level"):
        tta_views(x, 4)


def test_tta_level_3_is_every_two_pixel_shift_and_its_mirror():
    x = _images()
    views = tta_views(x, 3)
    assert len(views) == 50 and all(w == 1 / 50 for w, _ in views)
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    windows = [padded[:, a:a + 5, b:b + 6] for a in range(5) for b in range(5)]
    expected = [v for w in windows for v in (w, w[:, :, ::-1])]
    for (_, view), want in zip(views, expected):
        assert np.array_equal(np.asarray(view), want)
    # the unshifted image and its mirror are views 24 and 25 (the centre of the 5x5 grid)
    assert np.array_equal(np.asarray(views[24][1]), np.asarray(x))
    assert np.array_equal(np.asarray(views[25][1]), np.asarray(x)[:, :, ::-1])
    # grid_shift(k) says how far shift k moves the content (down, right)
    for k in range(25):
        dy, dx = grid_shift(k)
        view, img = np.asarray(views[2 * k][1]), np.asarray(x)
        assert np.array_equal(view[:, max(dy, 0):5 + min(dy, 0), max(dx, 0):6 + min(dx, 0)],
                              img[:, max(-dy, 0):5 - max(dy, 0), max(-dx, 0):6 - max(dx, 0)])
    assert grid_shift(0) == (2, 2) and grid_shift(24) == (-2, -2)


class _Linear(nn.Module):
    """A tiny classifier that sees every pixel, so that each view changes its logits."""

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(4)(x.reshape(x.shape[0], -1))


def test_level_3_logits_loop_over_shifts_as_the_mean_of_the_50_views():
    x = jax.random.normal(jax.random.key(1), (3, 5, 6, 2))
    model = _Linear()
    variables = model.init(jax.random.key(2), x)
    want = sum(w * model.apply(variables, v) for w, v in tta_views(x, 3))
    got = jax.jit(lambda v, x: eval_logits(model, v, x, 3))(variables, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(got), np.asarray(model.apply(variables, x)), atol=1e-3)
    # one forward pass in the program, inside a loop over the 25 shifts
    hlo = jax.jit(lambda v, x: eval_logits(model, v, x, 3)).lower(variables, x).as_text()
    assert hlo.count("dot_general") == 1 and "while" in hlo
