import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.ops.pool import max_pool

CASES = [((2, 2), (2, 2), "VALID"), ((3, 3), (1, 1), "SAME"), ((3, 3), (2, 2), "SAME"),
         ((3, 2), (2, 1), "VALID"), ((2, 2), (1, 1), ((1, 0), (0, 1)))]


@pytest.mark.slow
@pytest.mark.parametrize("window, strides, padding", CASES)
@pytest.mark.parametrize("size", [(8, 8), (13, 11)])  # even, and odd sizes that leave a rest
def test_values_and_gradients_equal_flax(window, strides, padding, size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))  # continuous: no ties
    ref, ref_vjp = jax.vjp(lambda x: nn.max_pool(x, window, strides, padding), x)
    got, got_vjp = jax.vjp(lambda x: max_pool(x, window, strides, padding), x)
    np.testing.assert_array_equal(got, ref)
    g = jax.random.normal(jax.random.key(1), ref.shape)
    np.testing.assert_allclose(got_vjp(g)[0], ref_vjp(g)[0], rtol=1e-6, atol=1e-6)


def test_gradient_of_a_tied_window_goes_to_one_input():
    x = jnp.zeros((1, 2, 2, 1))  # one window, four equal maxima (as after a ReLU)
    (dx,) = jax.vjp(lambda x: max_pool(x, (2, 2), (2, 2)), x)[1](jnp.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(np.asarray(dx).ravel(), [1, 0, 0, 0])


def test_by_hand():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(max_pool(x, (2, 2), (2, 2))[0, :, :, 0], [[5, 7], [13, 15]])
