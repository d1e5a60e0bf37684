"""A 2-D convolution whose weight gradient is a sum of plain matrix products (for CPUs).

XLA's CPU backend computes a convolution's forward pass and input gradient at matmul-like
speed, but its weight gradient (a correlation of the input with the output gradient) runs
several times slower, worst at large spatial size x batch. This module keeps XLA's forward
pass and input gradient and replaces the weight gradient with

    dW[i, j] = sum over (b, y, x) of  x_pad[b, s*y + i, s*x + j, :]^T  g[b, y, x, :]

for every kernel offset ``(i, j)``: one ``[Cin, B*Ho*Wo] @ [B*Ho*Wo, Cout]`` matmul per
offset on a strided slice of the padded input (:func:`weight_grad`). Layers with very few
channels (an RGB input layer) make those matmuls too thin; for them
:func:`weight_grad_banded` computes the same sum as one large matmul over image rows. The
results equal the ``lax`` gradient up to float rounding (tests check both for strides 1
and 2, SAME and VALID padding, odd sizes and 1x1 to 7x7 kernels).

``conv_general_dilated`` has the signature of ``lax.conv_general_dilated`` so it plugs into
``flax.linen.Conv(conv_general_dilated=...)``; cases it does not cover (dilation, groups,
other layouts, an explicit precision) go to ``lax`` unchanged. For the rest,
:func:`weight_grad_choice` picks ``lax``, the per-offset or the banded weight gradient by
the layer's shape, and unpadded 1x1 convolutions become a matmul (:func:`conv1x1`).
Weight-gradient times on this project's 2-core CPU (ms; XLA / per-offset in one piece /
per-offset in batch chunks, the default), batch 256: 32x32, 3x3 64->64: 723 / 559 / 347;
16x16, 3x3 128->128: 340 / 226 / 144; 32x32, 3x3 64->128 stride 2: 241 / 153 / 80;
batch 128: 16x16, 3x3 16->32: 9.5 / 3.9 (no chunks at this size); 32x32, 3x3 3->32:
9.1 / 5.9; 16x16, 5x5 4->8: 1.3 / 3.4 (left to XLA). SimpleCNN's 7x7 3->8 RGB layer at
32x32, batch 128 (measured while other jobs shared the machine): XLA 96, per-offset 66,
banded 13. :func:`conv_impl` picks this module only on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Below this many output positions (batch x Ho x Wo) XLA's weight gradient was as fast or
# faster in our per-layer timings (batch 128: 4x4, 3x3 256->256, 2,048 rows: XLA 10.4 ms,
# matmuls 13.2; 8x8, 3x3 128->128, 8,192 rows: XLA 21.9, matmuls in chunks 18.4).
MIN_ROWS = 8_192
# Padded input per chunk of the batch in :func:`weight_grad` (bytes): 2-3 MB chunks were
# fastest in our timings (chunks of 8, 16 and 32 images tried on four layer shapes).
CHUNK_BYTES = 3 << 20
# Thinner than this (cin * cout), the per-offset matmuls lost to XLA: BetterNet's 5x5 4->8
# layer at 16x16, batch 128: 3.4 ms against 1.3 ms.
MIN_CHANNEL_PRODUCT = 64
# Thin layers with at least this many kernel taps use the banded matmul: SimpleCNN's 7x7
# 3->8 layer at 32x32, batch 128: 13 ms against XLA's 96 ms, both measured on a busy
# machine (XLA won for the 5x5 above).
BANDED_MIN_TAPS = 49
Pads = tuple[tuple[int, int], tuple[int, int]]


def _lax_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC)


def weight_grad(x: jnp.ndarray, g: jnp.ndarray, kernel: tuple[int, int],
                strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
    """Gradient of ``sum(conv(x, w) * g)`` with respect to ``w``.

    ``x`` ``[B, H, W, Cin]``, ``g`` ``[B, Ho, Wo, Cout]`` -> ``[kh, kw, Cin, Cout]``.

    Large layers go through the batch in chunks of about :data:`CHUNK_BYTES` of padded
    input (a ``lax.scan`` that sums the chunks' gradients), so that the shifted slices are
    copied and multiplied while they are still in cache: on this project's 2-core CPU,
    batch 256 at 32x32, 64->64 3x3: 347 ms in chunks of 8 images, 559 ms in one piece.
    """
    b = x.shape[0]
    per_image = ((x.shape[1] + sum(pads[0])) * (x.shape[2] + sum(pads[1])) * x.shape[3]
                 * x.dtype.itemsize)
    chunk = max([d for d in range(1, b + 1) if b % d == 0 and d * per_image <= CHUNK_BYTES],
                default=1)
    if chunk == b:
        return _weight_grad_block(x, g, kernel, strides, pads)

    def add_chunk(total, xg):
        return total + _weight_grad_block(*xg, kernel, strides, pads), None

    total = jnp.zeros((*kernel, x.shape[3], g.shape[3]), jnp.float32)
    chunks = (x.reshape(b // chunk, chunk, *x.shape[1:]),
              g.reshape(b // chunk, chunk, *g.shape[1:]))
    return lax.scan(add_chunk, total, chunks)[0].astype(x.dtype)


def _weight_grad_block(x: jnp.ndarray, g: jnp.ndarray, kernel: tuple[int, int],
                       strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
    """:func:`weight_grad` of one piece of the batch, one matmul per kernel offset."""
    (kh, kw), (sh, sw) = kernel, strides
    b, _, _, cin = x.shape
    ho, wo, cout = g.shape[1:]
    # Negative padding (never produced by SAME/VALID) would crop: lax.pad handles both.
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    g2 = g.reshape(b * ho * wo, cout)
    taps = []
    for i in range(kh):
        for j in range(kw):
            xs = lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
                           (1, sh, sw, 1))                        # [B, Ho, Wo, Cin]
            taps.append(jnp.dot(xs.reshape(-1, cin).T, g2,
                                preferred_element_type=jnp.float32))  # [Cin, Cout]
    return jnp.stack(taps).reshape(kh, kw, cin, cout).astype(x.dtype)


def weight_grad_banded(x: jnp.ndarray, g: jnp.ndarray, kernel: tuple[int, int],
                       strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
    """The same gradient as :func:`weight_grad`, as one large matmul, for layers with very
    few channels (an RGB input layer), where the per-offset matmuls ``[Cin, rows] @ [rows,
    Cout]`` are too thin to run fast.

    Rows are image rows ``(b, y)``: ``A[(b, y), (i, x', c)] = x_pad[b, s*y + i, x', c]``
    (every input column) and ``G[(b, y), (x, o)] = g[b, y, x, o]``; ``C = A^T G`` holds every
    (input column, output column) pair, and ``dW[i, j, c, o] = sum_x C[(i, s*x + j, c),
    (x, o)]`` reads its bands. It multiplies ``(Wp / kw)`` times more than needed, which
    pays only when the channels are few.
    """
    (kh, kw), (sh, sw) = kernel, strides
    b, _, _, cin = x.shape
    ho, wo, cout = g.shape[1:]
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    wp = xp.shape[2]
    rows = [lax.slice(xp, (0, i, 0, 0), (b, i + sh * (ho - 1) + 1, wp, cin), (1, sh, 1, 1))
            for i in range(kh)]                                  # kh x [B, Ho, Wp, Cin]
    a = jnp.stack(rows, 2).reshape(b * ho, kh * wp * cin)
    c = lax.dot_general(a, g.reshape(b * ho, wo * cout), (((0,), (0,)), ((), ())),
                        preferred_element_type=jnp.float32).reshape(kh, wp, cin, wo, cout)
    cols = jnp.arange(wo)
    # c[:, sw*x + j, :, x, :] -> [Wo, kh, Cin, Cout], summed over x, for each j.
    return jnp.stack([c[:, cols * sw + j, :, cols, :].sum(0) for j in range(kw)],
                     axis=1).astype(x.dtype)


def conv1x1(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int]) -> jnp.ndarray:
    """An unpadded 1x1 convolution ``[B, H, W, Cin]`` x ``[1, 1, Cin, Cout]`` as a strided
    slice and one matmul, ``[B, Ho, Wo, Cout]``. Autodiff then gives matmuls and a padding
    for the gradients. XLA's CPU backend is slow at both: its weight gradient of a projection
    shortcut (64->128, stride 2, batch 128 at 16x16) took 21 ms against 2.9 ms as a matmul,
    and it runs the input gradient of a strided 1x1 convolution as a dilated convolution
    (seen in a profile of the ResidualBlock stack)."""
    xs = x[:, ::strides[0], ::strides[1], :]
    return jnp.einsum("bhwc,co->bhwo", xs, w[0, 0])


_WEIGHT_GRADS = {"matmul": weight_grad, "banded": weight_grad_banded}


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads,
           wgrad: str = "matmul") -> jnp.ndarray:
    """NHWC x HWIO convolution with explicit ``pads`` ``((top, bottom), (left, right))``:
    ``[B, H, W, Cin]`` -> ``[B, Ho, Wo, Cout]``; same values and gradients as ``lax``.
    ``wgrad`` picks the weight gradient: ``"matmul"`` (:func:`weight_grad`) or ``"banded"``
    (:func:`weight_grad_banded`)."""
    return _lax_conv(x, w, strides, pads)


def _conv2d_fwd(x, w, strides, pads, wgrad):
    return _lax_conv(x, w, strides, pads), (x, w)


def _conv2d_bwd(strides, pads, wgrad, residuals, g):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x_: _lax_conv(x_, w, strides, pads), x)
    (dx,) = input_vjp(g)
    return dx, _WEIGHT_GRADS[wgrad](x, g, w.shape[:2], strides, pads)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _is_plain_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(dimension_numbers) == _NHWC


def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None) -> jnp.ndarray:
    """Drop-in for ``lax.conv_general_dilated``: 2-D NHWC/HWIO convolutions without dilation,
    groups or an explicit precision use :func:`conv1x1` (unpadded 1x1 kernels) or
    :func:`conv2d` with the weight gradient :func:`weight_grad_choice` picks; anything else
    is passed to ``lax`` as it is."""
    plain = (lhs.ndim == 4 and _is_plain_nhwc(dimension_numbers) and feature_group_count == 1
             and batch_group_count == 1 and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1))) and precision is None
             and preferred_element_type is None)
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    strides = tuple(int(s) for s in window_strides)
    if rhs.shape[:2] == (1, 1) and all(p == (0, 0) for p in pads):
        return conv1x1(lhs, rhs, strides)
    rows = lhs.shape[0]  # output positions: batch x Ho x Wo
    for size, k, s, (lo, hi) in zip(lhs.shape[1:3], rhs.shape[:2], strides, pads):
        rows *= (size + lo + hi - k) // s + 1
    wgrad = weight_grad_choice(rows, *rhs.shape)
    if wgrad == "lax":
        return _lax_conv(lhs, rhs, strides, pads)
    return conv2d(lhs, rhs, strides, pads, wgrad)


def weight_grad_choice(rows: int, kh: int, kw: int, cin: int, cout: int) -> str:
    """Which weight gradient wins for a layer with ``rows`` output positions (batch x Ho x
    Wo) and a ``[kh, kw, cin, cout]`` kernel: ``"lax"``, ``"matmul"`` or ``"banded"``.

    A rule read off per-layer timings on this project's 2-core CPU (the layers of SimpleCNN,
    BetterNet and the benchmark's ResidualStack; see the module docstring): the per-offset
    matmuls need enough rows and enough channels (``cin * cout >= 64``); below that, XLA is
    faster, except for wide kernels over few channels (SimpleCNN's 7x7 RGB layer), where
    the banded matmul is. A 1x1 kernel is one matmul, which beats XLA at every size.
    """
    if kh * kw == 1:  # a single matmul at any size (a padded 1x1; unpadded: conv1x1)
        return "matmul"
    if rows < MIN_ROWS:
        return "lax"
    if cin * cout >= MIN_CHANNEL_PRODUCT:
        return "matmul"
    return "banded" if kh * kw >= BANDED_MIN_TAPS else "lax"


# The command-line choices (experiments' --conv flag) and the fast_conv value each means.
CONV_CHOICES = {"auto": None, "fast": True, "lax": False}
CONV_HELP = ("convolution and max pooling: auto (jaxhw's CPU versions - matmul weight "
             "gradients, pooling without select_and_scatter - on a CPU, lax/cuDNN "
             "elsewhere), fast (jaxhw's on any backend) or lax (always lax); speed only")


def conv_impl(fast: bool | None = None):
    """The convolution for flax ``nn.Conv``: :func:`conv_general_dilated` when ``fast`` (by
    default: when JAX's default backend is the CPU), else ``lax.conv_general_dilated``
    (cuDNN on GPUs)."""
    if fast is None:
        fast = jax.default_backend() == "cpu"
    return conv_general_dilated if fast else lax.conv_general_dilated
