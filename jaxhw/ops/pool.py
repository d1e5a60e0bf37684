"""Max pooling whose backward pass is element-wise work instead of ``select_and_scatter``.

``flax.linen.max_pool`` lowers to ``lax.reduce_window``, whose gradient XLA computes with
``select_and_scatter``, which XLA's CPU backend runs many times slower than the pooling
itself (figures in docs/benchmarks.md). Here a pool is the maximum over the
strided slices ("taps") of the input padded with -inf, one per window position (windows
larger than 2x2 pool rows, then columns: fewer taps), and its backward pass sends each
output's gradient to the first tap that holds the maximum, by padding it back into place.
The values are the same, and so are the gradients wherever the window's maximum is unique
(with ties, the gradient still goes to one maximal input).

:func:`max_pool` has the signature of ``flax.linen.max_pool`` (NHWC, 2-D windows); the CNN
modules take it as ``max_pool=``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxhw.ops.conv import Pads, output_size


def _taps(x: jnp.ndarray, window: tuple[int, int], strides: tuple[int, int],
          pads: Pads) -> jnp.ndarray:
    """``[kh * kw, B, Ho, Wo, C]``: every window position's strided slice of the input
    padded with -inf (so padding never wins the maximum)."""
    (kh, kw), (sh, sw) = window, strides
    b, h, w, c = x.shape
    ho, wo = map(output_size, (h, w), window, strides, pads)
    xp = lax.pad(x, jnp.array(-jnp.inf, x.dtype),
                 ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    return jnp.stack([
        lax.slice(xp, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                  (1, sh, sw, 1))
        for i in range(kh) for j in range(kw)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x: jnp.ndarray, window: tuple[int, int], strides: tuple[int, int],
              pads: Pads) -> jnp.ndarray:
    return jnp.max(_taps(x, window, strides, pads), axis=0)


def _max_pool_fwd(x, window, strides, pads):
    taps = _taps(x, window, strides, pads)
    out = jnp.max(taps, axis=0)
    # The first maximal tap wins: one winner per output, as with select_and_scatter. A chain
    # of selects, from the last tap back, fuses into one loop (argmax's variadic reduce
    # did not, and cost more than the pooling).
    winner = jnp.full(out.shape, len(taps) - 1, jnp.int32)
    for t in range(len(taps) - 2, -1, -1):
        winner = jnp.where(taps[t] == out, t, winner)
    return out, (winner, x.shape)


def _max_pool_bwd(window, strides, pads, residuals, g):
    winner, (b, h, w, c) = residuals
    (kh, kw), (sh, sw) = window, strides
    ho, wo = g.shape[1:3]
    hp, wp = h + sum(pads[0]), w + sum(pads[1])
    zero = jnp.zeros((), g.dtype)
    dxp = jnp.zeros((b, hp, wp, c), g.dtype)
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        # The transpose of the strided slice: put tap t's share back where it was read.
        dxp = dxp + lax.pad(jnp.where(winner == t, g, zero), zero,
                            ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                             (j, wp - j - sw * (wo - 1) - 1, sw - 1), (0, 0, 0)))
    return (lax.slice(dxp, (0, pads[0][0], pads[1][0], 0),
                      (b, pads[0][0] + h, pads[1][0] + w, c)),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(inputs: jnp.ndarray, window_shape: Sequence[int],
             strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> jnp.ndarray:
    """Drop-in for ``flax.linen.max_pool`` on ``[B, H, W, C]``: ``[B, Ho, Wo, C]``."""
    if inputs.ndim != 4 or len(window_shape) != 2:
        return nn.max_pool(inputs, tuple(window_shape), strides and tuple(strides), padding)
    window = tuple(int(k) for k in window_shape)
    strides = tuple(int(s) for s in (strides or (1, 1)))
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(inputs.shape[1:3], window, strides, padding)
    (top, bottom), (left, right) = ((int(lo), int(hi)) for lo, hi in padding)
    if window[0] * window[1] <= 4:  # 2x2 and smaller: one pass (faster than two here)
        return _max_pool(inputs, window, strides, ((top, bottom), (left, right)))
    # A max over a rectangle is a max over its rows of a max over its columns: two passes of
    # kh and kw taps instead of one of kh * kw (faster on the CPU), with the same values.
    x = _max_pool(inputs, (window[0], 1), (strides[0], 1), ((top, bottom), (0, 0)))
    return _max_pool(x, (1, window[1]), (1, strides[1]), ((0, 0), (left, right)))
