import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxhw import ops
from jaxhw.ops import conv as fast_conv
from jaxhw.ops.conv import conv2d, conv_general_dilated, phase_conv
from jaxhw.ops.pool import max_pool
from jaxhw.train.xla_options import CPU_CONV_OPTIONS, cpu_conv_options

NHWC = ("NHWC", "HWIO", "NHWC")


def _inputs(size, kernel, cin=3, cout=5, batch=2):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (batch, *size, cin))
    w = jax.random.normal(kw, (kernel, kernel, cin, cout))
    return x, w, kg


def _pads(x, w, stride, padding):
    if isinstance(padding, str):
        return tuple(map(tuple, lax.padtype_to_pads(x.shape[1:3], w.shape[:2],
                                                    (stride, stride), padding)))
    return padding


CASES = [(k, s, p) for k in (1, 3, 5, 7) for s in (1, 2, 3) for p in ("SAME", "VALID")]
CASES += [(3, 1, ((1, 2), (0, 3))), (3, 2, ((1, 2), (0, 3))), (4, 2, ((2, 1), (1, 0)))]


@pytest.mark.parametrize("kernel, stride, padding", CASES)
def test_gradients_equal_lax(kernel, stride, padding):
    x, w, kg = _inputs((9, 11), kernel)  # odd sizes, not square
    pads = _pads(x, w, stride, padding)

    def custom(x, w, strides, padding, dimension_numbers):  # always the custom VJP
        return conv2d(x, w, strides, pads)

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


@pytest.mark.parametrize("kernel, stride, padding", CASES)
def test_phase_conv_equals_lax(kernel, stride, padding):
    x, w, _ = _inputs((9, 11), kernel)
    pads = _pads(x, w, stride, padding)
    ref = lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC)
    got = phase_conv(x, w, (stride, stride), pads)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))


def test_phase_conv_against_a_hand_computation():
    # Stride 2, 3x3, VALID on a 5x5 single-channel image: y[a, b] = sum x[2a+i, 2b+j] w[i, j].
    x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    w = jnp.arange(9.0).reshape(3, 3, 1, 1) - 4
    got = phase_conv(x, w, (2, 2), ((0, 0), (0, 0)))
    xs, ws = np.asarray(x)[0, :, :, 0], np.asarray(w)[:, :, 0, 0]
    by_hand = [[np.sum(xs[2 * a:2 * a + 3, 2 * b:2 * b + 3] * ws) for b in range(2)]
               for a in range(2)]
    np.testing.assert_allclose(got[0, :, :, 0], by_hand)


def test_input_gradient_goes_through_the_phases():
    x, w, _ = _inputs((8, 8), 3, cin=4, cout=4)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(conv2d(x, w, (2, 2), ((1, 1), (1, 1))) ** 2)))
    hlo = grad.lower(x).as_text()
    # XLA's own input gradient of a stride-2 convolution dilates the output gradient
    # (lhs_dilate = [2, 2] in StableHLO); the phase-split one has stride-1 convolutions only.
    assert "lhs_dilate = [2, 2]" not in hlo
    plain = jax.jit(jax.grad(lambda x: jnp.sum(lax.conv_general_dilated(
        x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=NHWC) ** 2)))
    assert "lhs_dilate = [2, 2]" in plain.lower(x).as_text()


def test_only_large_strided_convolutions_take_the_custom_path(monkeypatch):
    x, w, _ = _inputs((8, 8), 3, cin=8, cout=8)  # stride 2: 2 x 4 x 4 = 32 output positions
    calls = []
    monkeypatch.setattr(fast_conv, "conv2d", lambda *a: calls.append(a) or conv2d(*a))
    conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
    assert not calls
    monkeypatch.setattr(fast_conv, "MIN_ROWS", 32)
    conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)  # stride 1: lax
    assert not calls
    conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=NHWC)
    assert len(calls) == 1 and calls[0][2:] == ((2, 2), ((0, 1), (0, 1)))


def test_unsupported_cases_fall_back_to_lax(monkeypatch):
    monkeypatch.setattr(fast_conv, "MIN_ROWS", 1)
    x, w, _ = _inputs((8, 8), 3, cin=4, cout=4)
    dilated = conv_general_dilated(x, w, (2, 2), "SAME", rhs_dilation=(2, 2),
                                   dimension_numbers=NHWC)
    ref = lax.conv_general_dilated(x, w, (2, 2), "SAME", rhs_dilation=(2, 2),
                                   dimension_numbers=NHWC)
    np.testing.assert_allclose(dilated, ref, rtol=1e-6)


@pytest.mark.slow
def test_flax_conv_outputs_and_gradients_unchanged(monkeypatch):
    monkeypatch.setattr(fast_conv, "MIN_ROWS", 1)  # take the custom path at this tiny size
    x, _, _ = _inputs((10, 10), 3)
    plain = nn.Conv(6, (3, 3), strides=2)
    fast = nn.Conv(6, (3, 3), strides=2, conv_general_dilated=conv_general_dilated)
    params = plain.init(jax.random.key(1), x)
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-6)
    grads = [jax.grad(lambda p, x, m=m: jnp.sum(m.apply(p, x) ** 2), (0, 1))(params, x)
             for m in (plain, fast)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_layers_and_compiler_options_follow_the_backend():
    assert ops.layers("lax") == ops.Layers(lax.conv_general_dilated, nn.max_pool, False)
    assert ops.layers("fast") == ops.Layers(conv_general_dilated, max_pool, True)
    assert ops.layers("auto", backend="cpu").fast and not ops.layers("auto", backend="gpu").fast
    assert ops.layers().fast == (jax.default_backend() == "cpu")
    with pytest.raises(ValueError, match="unknown convolution choice 'cudnn'"):
        ops.layers("cudnn")
    assert cpu_conv_options(False, "cpu") is None and cpu_conv_options(True, "gpu") is None
    assert cpu_conv_options(True, "cpu") == CPU_CONV_OPTIONS


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA CPU option")
def test_compiler_options_keep_convolutions_out_of_ynnpack():
    x, w, _ = _inputs((4, 4), 3, cin=32, cout=32, batch=1)

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC)

    default = jax.jit(conv)
    fast = jax.jit(conv, compiler_options=cpu_conv_options(True))
    np.testing.assert_allclose(fast(x, w), default(x, w), rtol=1e-5, atol=1e-4)
    # With XLA's defaults the convolution is a YNNPACK fusion; with the options it is not.
    assert '"__ynn_fusion"' in default.lower(x, w).compile().as_text()
    assert '"__ynn_fusion"' not in fast.lower(x, w).compile().as_text()


@pytest.mark.slow
def test_betternet_outputs_and_gradients_unchanged(monkeypatch):
    from jaxhw.models import BetterNet
    from jaxhw.models.cnn import conv_stem

    monkeypatch.setattr(fast_conv, "MIN_ROWS", 1)  # every strided conv through the custom VJP
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    nets = [BetterNet(stem=conv_stem(8), widths=(16, 32), blocks=(1, 1), conv=o.conv_module, max_pool=o.max_pool)
            for o in (ops.layers("lax"), ops.layers("fast"))]
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
