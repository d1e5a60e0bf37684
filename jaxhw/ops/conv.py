"""A 2-D convolution for CPU training: a phase-split input gradient for strided layers.

XLA computes the input gradient of a strided convolution as a convolution over the output
gradient dilated with zeros (at stride 2, four times the work). :func:`conv2d` keeps XLA's
forward pass and weight gradient and computes the input gradient through
:func:`phase_conv`: the same convolution written as one stride-1 convolution per input
phase (the rows and columns congruent to ``(r, c)`` modulo the stride, each with the
kernel taps that touch them), whose gradient is stride-1 convolutions and interleaving.

:func:`conv_general_dilated` has the signature of ``lax.conv_general_dilated``, so it plugs
into ``flax.linen.Conv(conv_general_dilated=...)`` (the CNN modules take it as ``conv=``):
strided NHWC/HWIO convolutions with at least :data:`MIN_ROWS` output positions go through
:func:`conv2d`, everything else to ``lax`` unchanged. It changes speed only; values and
gradients agree with ``lax`` to float rounding. The other half of the CPU speed is an XLA
compile option (``jaxhw.train.xla_options.cpu_conv_options``); the timings behind both
are in docs/benchmarks.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Strided layers with fewer output positions (batch x Ho x Wo) keep XLA's input gradient,
# which was as fast or faster there (docs/benchmarks.md).
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
