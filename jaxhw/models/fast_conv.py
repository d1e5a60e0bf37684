"""A 2-D convolution whose weight gradient is a sum of plain matrix products (for CPUs).

XLA's CPU backend computes a convolution's forward pass and input gradient at matmul-like
speed, but its weight gradient (a correlation of the input with the output gradient) runs
several times slower, worst at large spatial size x batch. This module keeps XLA's forward
pass and input gradient and replaces the weight gradient with

    dW[i, j] = sum over (b, y, x) of  x_pad[b, s*y + i, s*x + j, :]^T  g[b, y, x, :]

for every kernel offset ``(i, j)``: one ``[Cin, B*Ho*Wo] @ [B*Ho*Wo, Cout]`` matmul per
offset on a strided slice of the padded input. The result equals the ``lax`` gradient up to
float rounding (tests check it for strides 1 and 2, SAME and VALID padding, odd sizes and
1x1 to 7x7 kernels).

``conv_general_dilated`` has the signature of ``lax.conv_general_dilated`` so it plugs into
``flax.linen.Conv(conv_general_dilated=...)``; cases it does not cover (dilation, groups,
other layouts) go to ``lax`` unchanged, and so do convolutions with fewer than
:data:`MIN_ROWS` output positions (``batch x Ho x Wo``), where the per-offset matmuls are too
small to beat XLA. :func:`conv_impl` picks it only on CPU.

Per-layer times on this project's 2-core CPU (ms, weight gradient only, XLA vs matmul):
batch 128 at 16x16, 16->32 3x3: 10.3 vs 4.6; 32x32, 3->8 7x7: 44.5 vs 27.2; 8x8,
128->128 3x3: 21.2 vs 26.9 (too few rows: left to XLA); batch 256 at 32x32, 64->64 3x3:
627 vs 520.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Below this many output positions (batch x Ho x Wo) XLA's weight gradient was as fast or
# faster in our per-layer timings (batch 128 at 8x8 = 8,192 lost; 128 x 10x10 = 12,800 won).
MIN_ROWS = 12_288
Pads = tuple[tuple[int, int], tuple[int, int]]


def _lax_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC)


def weight_grad(x: jnp.ndarray, g: jnp.ndarray, kernel: tuple[int, int],
                strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
    """Gradient of ``sum(conv(x, w) * g)`` with respect to ``w``.

    ``x`` ``[B, H, W, Cin]``, ``g`` ``[B, Ho, Wo, Cout]`` -> ``[kh, kw, Cin, Cout]``.
    """
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
    """NHWC x HWIO convolution with explicit ``pads`` ``((top, bottom), (left, right))``:
    ``[B, H, W, Cin]`` -> ``[B, Ho, Wo, Cout]``; same values and gradients as ``lax``."""
    return _lax_conv(x, w, strides, pads)


def _conv2d_fwd(x, w, strides, pads):
    return _lax_conv(x, w, strides, pads), (x, w)


def _conv2d_bwd(strides, pads, residuals, g):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x_: _lax_conv(x_, w, strides, pads), x)
    (dx,) = input_vjp(g)
    return dx, weight_grad(x, g, w.shape[:2], strides, pads)


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
    groups or an explicit precision, and with at least :data:`MIN_ROWS` output positions, use
    :func:`conv2d`; anything else is passed to ``lax`` as it is."""
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
    rows = lhs.shape[0]  # output positions: batch x Ho x Wo
    for size, k, s, (lo, hi) in zip(lhs.shape[1:3], rhs.shape[:2], strides, pads):
        rows *= (size + lo + hi - k) // s + 1
    if rows < MIN_ROWS:
        return _lax_conv(lhs, rhs, strides, pads)
    return conv2d(lhs, rhs, strides, pads)


# The command-line choices (experiments' --conv flag) and the fast_conv value each means.
CONV_CHOICES = {"auto": None, "fast": True, "lax": False}
CONV_HELP = ("convolution: auto (jaxhw's matmul weight gradient on a CPU, lax/cuDNN "
             "elsewhere), fast (jaxhw's on any backend) or lax (always lax); speed only")


def conv_impl(fast: bool | None = None):
    """The convolution for flax ``nn.Conv``: :func:`conv_general_dilated` when ``fast`` (by
    default: when JAX's default backend is the CPU), else ``lax.conv_general_dilated``
    (cuDNN on GPUs)."""
    if fast is None:
        fast = jax.default_backend() == "cpu"
    return conv_general_dilated if fast else lax.conv_general_dilated
