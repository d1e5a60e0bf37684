import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxhw.models import fast_conv
from jaxhw.models.fast_conv import conv2d, conv_general_dilated, conv_impl

NHWC = ("NHWC", "HWIO", "NHWC")


def _inputs(size, kernel, cin=3, cout=5, batch=2):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (batch, *size, cin))
    w = jax.random.normal(kw, (kernel, kernel, cin, cout))
    return x, w, kg


CASES = [(k, s, p) for k in (1, 3, 5, 7) for s in (1, 2) for p in ("SAME", "VALID")]
CASES += [(3, 1, ((1, 2), (0, 3))), (3, 2, ((1, 2), (0, 3)))]  # uneven explicit padding


@pytest.mark.parametrize("wgrad", ["matmul", "banded"])
@pytest.mark.parametrize("kernel, stride, padding", CASES)
def test_gradients_equal_lax(kernel, stride, padding, wgrad):
    x, w, kg = _inputs((9, 11), kernel)  # odd sizes, not square

    pads = (lax.padtype_to_pads(x.shape[1:3], w.shape[:2], (stride, stride), padding)
            if isinstance(padding, str) else padding)

    def custom(x, w, strides, padding, dimension_numbers):  # always the custom VJP
        return conv2d(x, w, strides, tuple(map(tuple, pads)), wgrad)

    def loss(conv, x, w):
        y = conv(x, w, (stride, stride), padding, dimension_numbers=NHWC)
        # a fixed random cotangent, so every output element's gradient is checked
        return jnp.sum(y * jax.random.normal(kg, y.shape))

    ref = jax.grad(lambda x, w: loss(lax.conv_general_dilated, x, w), (0, 1))(x, w)
    got = jax.grad(lambda x, w: loss(custom, x, w), (0, 1))(x, w)
    np.testing.assert_allclose(loss(custom, x, w), loss(lax.conv_general_dilated, x, w),
                               rtol=1e-5)
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


@pytest.mark.parametrize("stride", [1, 2])
def test_weight_gradient_in_batch_chunks_equals_one_piece(monkeypatch, stride):
    x, w, kg = _inputs((9, 9), 3, cin=4, cout=6, batch=6)
    pads = ((1, 1), (1, 1))
    g = jax.random.normal(kg, (6, 5 if stride == 2 else 9, 5 if stride == 2 else 9, 6))
    whole = fast_conv.weight_grad(x, g, (3, 3), (stride, stride), pads)
    monkeypatch.setattr(fast_conv, "CHUNK_BYTES", 2 * 11 * 11 * 4 * 4)  # 2 images per chunk
    chunked = jax.jit(lambda x, g: fast_conv.weight_grad(x, g, (3, 3), (stride, stride), pads))
    np.testing.assert_allclose(chunked(x, g), whole, rtol=1e-5, atol=1e-5)
    assert "while" in chunked.lower(x, g).as_text()  # it did go through the scan


@pytest.mark.parametrize("stride", [1, 2])
def test_1x1_convolutions_equal_lax(stride):
    x, w, kg = _inputs((9, 10), 1, cin=4, cout=6)  # odd height: the last row is kept
    convs = [lambda x, w, c=c: c(x, w, (stride, stride), "SAME", dimension_numbers=NHWC)
             for c in (lax.conv_general_dilated, conv_general_dilated)]
    ref, got = (c(x, w) for c in convs)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    g = jax.random.normal(kg, ref.shape)
    for a, b in zip(*(jax.vjp(c, x, w)[1](g) for c in convs)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_weight_gradient_against_a_hand_computation():
    # 1x1 kernel: dW[0, 0] = sum over pixels of x^T g, written out with numpy.
    x, w, kg = _inputs((4, 4), 1, cin=2, cout=3, batch=1)
    g = jax.random.normal(kg, (1, 4, 4, 3))
    _, vjp = jax.vjp(lambda w: conv2d(x, w, (1, 1), ((0, 0), (0, 0))), w)
    (dw,) = vjp(g)
    by_hand = np.asarray(x).reshape(16, 2).T @ np.asarray(g).reshape(16, 3)
    np.testing.assert_allclose(dw[0, 0], by_hand, rtol=1e-5)


def test_unsupported_cases_fall_back_to_lax():
    x, w, _ = _inputs((8, 8), 3, cin=4, cout=4)
    dilated = conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2),
                                   dimension_numbers=NHWC)
    ref = lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2),
                                   dimension_numbers=NHWC)
    np.testing.assert_allclose(dilated, ref, rtol=1e-6)


def test_small_convolutions_stay_with_lax(monkeypatch):
    x, w, _ = _inputs((8, 8), 3, cin=8, cout=8)  # 2 x 8 x 8 = 128 output positions
    calls = []
    monkeypatch.setattr(fast_conv, "conv2d", lambda *a: calls.append(a) or conv2d(*a))
    conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    assert not calls
    monkeypatch.setattr(fast_conv, "MIN_ROWS", 128)
    conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)
    assert len(calls) == 1 and calls[0][-1] == "matmul"


@pytest.mark.parametrize("rows, kernel, expected", [
    (128 * 26 * 26, (7, 7, 3, 8), "banded"),     # SimpleCNN's RGB layer
    (128 * 16 * 16, (5, 5, 4, 8), "lax"),        # BetterNet's thin 5x5 Inception branch
    (128 * 16 * 16, (3, 3, 16, 32), "matmul"),
    (128 * 16 * 16, (1, 1, 32, 4), "matmul"),
    (128 * 8 * 8, (3, 3, 128, 128), "matmul"),
    (128 * 4 * 4, (3, 3, 256, 256), "lax"),      # too few rows
    (128 * 4 * 4, (1, 1, 64, 128), "matmul"),    # but a 1x1 kernel is one matmul
])
def test_weight_gradient_choice(rows, kernel, expected):
    assert fast_conv.weight_grad_choice(rows, *kernel) == expected


def test_banded_weight_gradient_against_a_hand_computation():
    # dW[i, j, c, o] = sum over (b, y, x) of x_pad[b, y + i, x + j, c] g[b, y, x, o]
    x, w, kg = _inputs((5, 6), 3, cin=2, cout=3, batch=2)
    g = jax.random.normal(kg, (2, 5, 6, 3))
    pads = ((1, 1), (1, 1))
    got = fast_conv.weight_grad_banded(x, g, (3, 3), (1, 1), pads)
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    by_hand = np.zeros((3, 3, 2, 3))
    for i in range(3):
        for j in range(3):
            by_hand[i, j] = np.einsum("byxc,byxo->co", xp[:, i:i + 5, j:j + 6], np.asarray(g))
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-5)


def test_flax_conv_outputs_and_gradients_unchanged(monkeypatch):
    monkeypatch.setattr(fast_conv, "MIN_ROWS", 1)  # take the custom path at this tiny size
    monkeypatch.setattr(fast_conv, "MIN_CHANNEL_PRODUCT", 1)
    x, _, _ = _inputs((10, 10), 3)
    plain = nn.Conv(6, (3, 3), strides=2)
    fast = nn.Conv(6, (3, 3), strides=2, conv_general_dilated=conv_impl(True))
    params = plain.init(jax.random.key(1), x)
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-6)
    grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, x) ** 2))(params) for m in (plain, fast)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_conv_impl_follows_the_backend():
    assert conv_impl(False) is lax.conv_general_dilated
    assert conv_impl(True) is conv_general_dilated
    assert conv_impl() is (conv_general_dilated if jax.default_backend() == "cpu"
                           else lax.conv_general_dilated)


def test_betternet_outputs_and_gradients_unchanged(monkeypatch):
    from jaxhw.models import BetterNet

    monkeypatch.setattr(fast_conv, "MIN_ROWS", 1)  # every conv through the custom VJP
    monkeypatch.setattr(fast_conv, "MIN_CHANNEL_PRODUCT", 1)
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    nets = [BetterNet(stem=8, widths=(16, 32), blocks=(1, 1), fast_conv=f) for f in (False, True)]
    variables = nets[0].init(jax.random.key(3), x)

    def loss(net, params):
        logits, _ = net.apply({**variables, "params": params}, x, train=True,
                              mutable=["batch_stats"])
        return jnp.sum(logits ** 2)

    (l0, g0), (l1, g1) = (jax.value_and_grad(lambda p, n=n: loss(n, p))(variables["params"])
                          for n in nets)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    # Against the largest gradient: a conv bias followed by batch norm has a true gradient
    # of 0, so its leaf holds only rounding noise (~1e-8), which differs between the two.
    scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g0))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * scale)
