"""airbench's lookahead weight averaging, as a pure function of the train state.

Every ``every`` steps from epoch ``start_epochs`` on, a slow copy of the weights (parameters
and batch-norm statistics) moves towards the trained ones,
``slow <- slow + (1 - rho) * (fast - slow)``, and training continues from the slow copy
(``fast <- slow``). ``rho = base**every * (step / total_steps)**power`` rises from ~0 to
``base**every``: little averaging early, strong averaging at the end. At the end of every
epoch from then on training again continues from the slow copy, so each epoch's evaluation
and checkpoint (and the final model) see the averaged weights. The first synchronisation
only starts the slow copy (``rho = 0``). Optimizer state (momentum) is never averaged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxhw.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class Lookahead:
    total_steps: int       # optimizer steps of the whole run
    steps_per_epoch: int
    start_epochs: int = 3  # epochs trained before averaging starts (airbench: 3)
    every: int = 5         # steps between synchronisations
    base: float = 0.95     # rho's ceiling is base ** every
    power: float = 3.0     # how late rho rises

    def __post_init__(self):
        if min(self.total_steps, self.steps_per_epoch, self.every) < 1 or self.start_epochs < 0:
            raise ValueError(f"Lookahead needs positive step counts, got {self}")

    @property
    def first_sync(self) -> int:
        """The step (1-based) whose synchronisation starts the slow copy."""
        first = self.start_epochs * self.steps_per_epoch + 1
        return -(-first // self.every) * self.every

    def rho(self, step: jax.Array) -> jax.Array:
        """The decay used at synchronisation step ``step`` (0 at the first one)."""
        rho = self.base ** self.every * (step / self.total_steps) ** self.power
        return jnp.where(step == self.first_sync, 0.0, rho).astype(jnp.float32)

    def init(self, state: TrainState) -> TrainState:
        """``state`` with its slow copy (a copy of the current weights: the train step
        donates its input buffers, so the two must not share any)."""
        return state.replace(slow=jax.tree.map(
            jnp.copy, {"params": state.params, "batch_stats": state.batch_stats}))

    def __call__(self, state: TrainState) -> TrainState:
        """Apply the rule after an optimizer step (``state.step`` already counts it)."""
        s = state.step
        started = s >= self.first_sync
        sync = started & (s % self.every == 0)
        copy_back = sync | (started & (s % self.steps_per_epoch == 0))

        def update(st: TrainState) -> TrainState:
            fast = {"params": st.params, "batch_stats": st.batch_stats}
            weight = jnp.where(sync, 1.0 - self.rho(s), 0.0)
            slow = jax.tree.map(lambda a, b: a + (weight * (b - a)).astype(a.dtype), st.slow, fast)
            return st.replace(params=slow["params"], batch_stats=slow["batch_stats"], slow=slow)

        # A select, not lax.cond: a GPU evaluates a conditional's predicate on the host,
        # which would stall every step of a block; the update is a few elementwise ops.
        updated = update(state)
        return jax.tree.map(lambda new, old: jnp.where(copy_back, new, old), updated, state)
