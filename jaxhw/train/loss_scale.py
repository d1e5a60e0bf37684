"""Dynamic loss scaling for float16 training (GPUs of compute capability 7.x).

float16 has a narrow exponent range: small gradients underflow to zero. The loss is
multiplied by a large ``scale`` before differentiation and the gradients divided by it
after; a step whose gradients are not all finite is skipped and the scale halved, and
after ``period`` finite steps in a row the scale doubles. Everything is a select
(``jnp.where``), never a ``lax.cond``: a GPU evaluates a conditional's predicate on the
host, which would stall every step of a block.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class LossScale:
    """The scale and the finite steps since it last changed (both in the train state, so
    they are checkpointed and resumed)."""

    scale: jax.Array       # float32 scalar
    good_steps: jax.Array  # int32 scalar
    period: int = flax.struct.field(pytree_node=False, default=2000)
    factor: float = flax.struct.field(pytree_node=False, default=2.0)
    min_scale: float = flax.struct.field(pytree_node=False, default=1.0)

    @classmethod
    def create(cls, initial: float = 2.0 ** 15, period: int = 2000) -> "LossScale":
        return cls(jnp.asarray(initial, jnp.float32), jnp.zeros((), jnp.int32), period)

    def scale_loss(self, loss: jax.Array) -> jax.Array:
        return loss * self.scale.astype(loss.dtype)

    def unscale(self, grads: Any) -> Any:
        return jax.tree.map(lambda g: g / self.scale.astype(g.dtype), grads)

    def adjust(self, finite: jax.Array) -> "LossScale":
        """After a step: halve on a non-finite gradient, double after ``period`` finite
        steps in a row."""
        good = jnp.where(finite, self.good_steps + 1, 0)
        grow = good >= self.period
        scale = jnp.where(finite, jnp.where(grow, self.scale * self.factor, self.scale),
                          jnp.maximum(self.scale / self.factor, self.min_scale))
        return self.replace(scale=scale.astype(jnp.float32),
                            good_steps=jnp.where(grow, 0, good).astype(jnp.int32))


def all_finite(tree: Any) -> jax.Array:
    """True when every entry of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def keep_if(finite: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``finite``, else ``old``, leaf by leaf (a skipped step)."""
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
