"""Gradient accumulation: N micro-batches in one step are one batch of N times the size."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxhw.train.loop import Trainer
from jaxhw.train.steps import classification_loss, sequence_loss


class Mlp(nn.Module):
    """``[B, 6]`` -> logits ``[B, 3]``, or ``[B, 1, 3]`` as a one-token sequence."""

    sequence: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        logits = nn.Dense(3)(nn.relu(nn.Dense(16)(x)))
        return logits[:, None] if self.sequence else logits


def run(accumulate: int, batch_size: int, sequence: bool):
    """Three epochs of Adam; returns the epoch losses, the parameters and the step."""
    x = np.random.default_rng(0).normal(size=(128, 6)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.5, 0.5]).astype(np.int32)  # 0, 1, 2
    # as a sequence, label 2 is padding: the micro-batches' loss weights differ
    loss = sequence_loss(pad_id=2) if sequence else classification_loss()
    trainer = Trainer(Mlp(sequence), optax.adam(1e-2), loss_fn=loss, accumulate=accumulate,
                      log_every=2)
    data = trainer.put(x, y[:, None] if sequence else y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    losses = []
    for epoch in range(3):
        state, loss_value = trainer.train_epoch(state, data, batch_size, jax.random.key(epoch),
                                                progress=False)
        losses.append(loss_value)
    return losses, state.params, int(state.step)


@pytest.mark.parametrize("sequence", [False, True])
def test_micro_batches_train_as_one_batch(sequence):
    whole, micro = run(1, 32, sequence), run(4, 8, sequence)
    assert whole[2] == micro[2] == 12  # 128 rows / 32 per optimizer step x 3 epochs
    np.testing.assert_allclose(micro[0], whole[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(micro[1]), jax.tree.leaves(whole[1])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_the_optimizer_state_holds_no_accumulator():
    trainer = Trainer(Mlp(), optax.adam(1e-2), accumulate=4)
    state = trainer.init_state(jax.random.key(0), np.zeros((1, 6), np.float32))
    # Adam's count, mu and nu: no copy of the gradients waits in the state
    sizes = sum(a.size for a in jax.tree.leaves(state.opt_state))
    assert sizes == 1 + 2 * sum(a.size for a in jax.tree.leaves(state.params))


def test_a_bucket_smaller_than_a_step_is_refused():
    from jaxhw.config import ConfigError
    trainer = Trainer(Mlp(), optax.adam(1e-2), accumulate=4)
    x = np.zeros((16, 6), np.float32)
    data = trainer.put(x, np.zeros(16, np.int32))
    state = trainer.init_state(jax.random.key(0), x[:1])
    with pytest.raises(ConfigError, match="32 rows .*batch size 8 x accumulate 4"):
        trainer.train_epoch(state, data, 8, jax.random.key(0), progress=False)
