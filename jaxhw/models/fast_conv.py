"""Fast 2-D convolutions on a CPU: an XLA compile option and a phase-split input gradient.

Two things made XLA's CPU convolutions slow in training on this project's 2-core CPU:

1. XLA hands every convolution to its YNNPACK library by default, and YNNPACK's
   convolutions ran up to 4x slower than XLA's built-in (Eigen) ones on the layers of
   the ResidualBlock stack and BetterNet, most of all the weight gradient (10x for
   SimpleCNN's 7x7 RGB layer: 42.9 vs 4.3 ms at batch 128); a few small layers were
   faster with YNNPACK, by 0.3 ms at most. :data:`CPU_COMPILER_OPTIONS`, passed to
   ``jax.jit(..., compiler_options=...)``, keeps YNNPACK for matmuls and reductions but
   not for convolutions. Batch 256, 3x3 64->64 at 32x32 (ms, forward / input gradient /
   weight gradient): YNNPACK 210 / 205 / 675, built-in 97 / 98 / 164; 3x3 64->128,
   stride 2: forward 126 -> 47, weight gradient 230 -> 93. Compile options are per
   ``jit`` and change no result beyond float rounding. The train and eval steps of
   :class:`jaxhw.train.Trainer` take them (``compiler_options=``); jit your own step with
   :func:`compiler_options` to get the same speed.
2. The input gradient of a strided convolution, which XLA runs as a convolution over the
   output gradient dilated with zeros (4x the work at stride 2): 3x3 64->128, stride 2,
   batch 256 at 32x32: 153-162 ms, against a 46 ms forward pass. :func:`conv2d` keeps
   XLA's forward pass and weight gradient and computes the input gradient through
   :func:`phase_conv`: the same convolution written as one stride-1 convolution per
   input phase (the rows and columns congruent to ``(r, c)`` modulo the stride, each with
   the kernel taps that touch them), whose gradient is stride-1 convolutions and
   interleaving. Same layer: 84 ms.

``conv_general_dilated`` has the signature of ``lax.conv_general_dilated`` so it plugs into
``flax.linen.Conv(conv_general_dilated=...)``: strided NHWC/HWIO convolutions with at
least :data:`MIN_ROWS` output positions go through :func:`conv2d`, everything else to
``lax`` unchanged. :func:`conv_impl` picks it only on a CPU; on a GPU ``lax`` (cuDNN) stays.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# XLA's library fusions on the CPU: matmuls and reductions go to YNNPACK (its default),
# convolutions do not (the default also sends LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION).
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}
# Strided layers with fewer output positions (batch x Ho x Wo) keep XLA's input gradient:
# 3x3 64->128 stride 2, batch 128, 8x8 output (8,192): XLA 7.2 ms, phases 7.7 ms;
# 3x3 128->256 stride 2, batch 256, 8x8 output (16,384): XLA 91 ms, phases 67 ms.
MIN_ROWS = 16_384
Pads = tuple[tuple[int, int], tuple[int, int]]


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    """Length of the output of a ``kernel``-wide window moving by ``stride`` over ``size``
    inputs padded by ``pad`` ``(before, after)`` (convolutions and pooling alike)."""
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _lax_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC)


def phase_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
               pads: Pads) -> jnp.ndarray:
    """The convolution ``[B, H, W, Cin]`` x ``[kh, kw, Cin, Cout]`` -> ``[B, Ho, Wo, Cout]``
    (explicit ``pads`` ``((top, bottom), (left, right))``) as a sum of stride-1 convolutions,
    one per phase ``(r, c)``: ``x_pad[:, r::sh, c::sw]`` with the taps ``w[r::sh, c::sw]``.

    Output ``y`` reads ``x_pad[sh*y + i]``; with ``i = r + sh*t`` that is row ``y + t`` of
    phase ``r``, so each phase is an ordinary stride-1 convolution. Used for its gradient
    (see :func:`conv2d`); XLA's own strided forward pass is faster.
    """
    (kh, kw), (sh, sw) = w.shape[:2], strides
    ho, wo = map(output_size, x.shape[1:3], w.shape[:2], strides, pads)
    # Pad (or crop) to exactly the rows and columns the phases read: every phase then has
    # ho - 1 + ceil(kh / sh) rows, and the shorter phases' extra outputs are cut off below.
    hp, wp = sh * (ho - 1 + -(-kh // sh)), sw * (wo - 1 + -(-kw // sw))
    xp = lax.pad(x, jnp.zeros((), x.dtype),
                 ((0, 0, 0), (pads[0][0], hp - x.shape[1] - pads[0][0], 0),
                  (pads[1][0], wp - x.shape[2] - pads[1][0], 0), (0, 0, 0)))
    y = None
    for r in range(min(sh, kh)):
        for c in range(min(sw, kw)):
            part = _lax_conv(xp[:, r::sh, c::sw], w[r::sh, c::sw], (1, 1), ((0, 0), (0, 0)))
            y = part[:, :ho, :wo] if y is None else y + part[:, :ho, :wo]
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], pads: Pads) -> jnp.ndarray:
    """NHWC x HWIO convolution with explicit ``pads`` ``((top, bottom), (left, right))``:
    ``[B, H, W, Cin]`` -> ``[B, Ho, Wo, Cout]``. XLA's forward pass and weight gradient;
    the input gradient is that of :func:`phase_conv`. Same values and gradients as ``lax``
    up to float rounding."""
    return _lax_conv(x, w, strides, pads)


def _conv2d_fwd(x, w, strides, pads):
    return _lax_conv(x, w, strides, pads), (x, w)


def _conv2d_bwd(strides, pads, residuals, g):
    x, w = residuals
    (dx,) = jax.vjp(lambda x_: phase_conv(x_, w, strides, pads), x)[1](g)
    (dw,) = jax.vjp(lambda w_: _lax_conv(x, w_, strides, pads), w)[1](g)
    return dx, dw


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
    """Drop-in for ``lax.conv_general_dilated``: strided 2-D NHWC/HWIO convolutions without
    dilation, groups or an explicit precision, with at least :data:`MIN_ROWS` output
    positions, use :func:`conv2d`; anything else is passed to ``lax`` as it is."""
    plain = (lhs.ndim == 4 and _is_plain_nhwc(dimension_numbers) and feature_group_count == 1
             and batch_group_count == 1 and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1))) and precision is None
             and preferred_element_type is None and tuple(window_strides) != (1, 1))
    if plain:
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
        strides = tuple(int(s) for s in window_strides)
        ho, wo = map(output_size, lhs.shape[1:3], rhs.shape[:2], strides, pads)
        if lhs.shape[0] * ho * wo >= MIN_ROWS:  # output positions: batch x Ho x Wo
            return conv2d(lhs, rhs, strides, pads)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)


# The command-line choices (experiments' --conv flag) and the fast_conv value each means.
CONV_CHOICES = {"auto": None, "fast": True, "lax": False}
CONV_HELP = ("convolution and max pooling: auto (jaxhw's CPU versions - XLA's built-in "
             "convolutions instead of YNNPACK's, a phase-split input gradient for strided "
             "layers, pooling without select_and_scatter - on a CPU, lax/cuDNN elsewhere), "
             "fast (jaxhw's on any backend) or lax (lax and XLA's defaults); speed only")


def _use_fast(fast: bool | None) -> bool:
    return jax.default_backend() == "cpu" if fast is None else fast


def conv_impl(fast: bool | None = None):
    """The convolution for flax ``nn.Conv``: :func:`conv_general_dilated` when ``fast`` (by
    default: when JAX's default backend is the CPU), else ``lax.conv_general_dilated``
    (cuDNN on GPUs)."""
    return conv_general_dilated if _use_fast(fast) else lax.conv_general_dilated


def compiler_options(fast: bool | None = None) -> dict[str, str] | None:
    """``compiler_options`` for ``jax.jit`` that go with ``fast`` (as in :func:`conv_impl`):
    :data:`CPU_COMPILER_OPTIONS` when fast and JAX's default backend is the CPU (the
    options concern XLA's CPU backend only), else ``None`` (XLA's defaults)."""
    return (dict(CPU_COMPILER_OPTIONS) if _use_fast(fast) and jax.default_backend() == "cpu"
            else None)
