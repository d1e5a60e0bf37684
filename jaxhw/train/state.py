"""The train state: one plain pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Parameters, batch statistics, optimizer state, step counter and PRNG key.

    ``rng`` never changes: the key of step ``s`` is ``fold_in(rng, s)``, so a run resumed
    from a checkpoint draws exactly the random numbers the uninterrupted run would have.
    """

    step: jax.Array          # int32 scalar, optimizer steps taken
    params: Any
    batch_stats: Any         # {} for models without batch norm
    opt_state: Any
    rng: jax.Array           # base PRNG key of the run
    slow: Any = None         # lookahead's slow weights {"params", "batch_stats"}; {} if unused
    loss_scale: Any = None   # float16 training: jaxhw.train.loss_scale.LossScale; else None

    def variables(self) -> dict:
        """The ``variables`` dict that ``model.apply`` expects."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       *example_inputs: Any) -> TrainState:
    """Initialise ``model`` on ``example_inputs`` (a batch of one is enough), as one compiled
    program: eager initialisation would dispatch every initialiser op by op."""

    @jax.jit
    def create(rng: jax.Array, *inputs: Any) -> TrainState:
        init_key, param_key, dropout_key = jax.random.split(rng, 3)
        variables = model.init({"params": param_key, "dropout": dropout_key}, *inputs,
                               train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}),
                          opt_state=tx.init(params), rng=init_key, slow={})

    return create(rng, *example_inputs)


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
