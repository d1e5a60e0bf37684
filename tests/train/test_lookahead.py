"""airbench's lookahead weight averaging against its definition, step by step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.train import TrainState
from jaxhw.train.lookahead import Lookahead
from tests.tiny import tiny_dataset, tiny_trainer


def _state(w, stat, slow_w, slow_stat, step):
    return TrainState(step=jnp.int32(step), params={"w": jnp.float32(w)},
                      batch_stats={"m": jnp.float32(stat)}, opt_state=(), rng=jax.random.key(0),
                      slow={"params": {"w": jnp.float32(slow_w)},
                            "batch_stats": {"m": jnp.float32(slow_stat)}})


def test_first_sync_and_rho_by_hand():
    la = Lookahead(total_steps=100, steps_per_epoch=10, start_epochs=3, every=5)
    assert la.first_sync == 35  # the first multiple of 5 after step 30
    assert float(la.rho(jnp.int32(35))) == 0.0
    assert float(la.rho(jnp.int32(40))) == pytest.approx(0.95 ** 5 * 0.4 ** 3, rel=1e-6)
    assert float(la.rho(jnp.int32(100))) == pytest.approx(0.95 ** 5, rel=1e-6)
    assert Lookahead(100, 10, start_epochs=0, every=5).first_sync == 5


def test_the_rule_at_each_kind_of_step():
    la = Lookahead(total_steps=100, steps_per_epoch=10, start_epochs=3, every=5)
    # before averaging starts: nothing happens, even at a sync or epoch-end step
    for step in (5, 10, 30):
        st = la(_state(2.0, 3.0, 7.0, 9.0, step))
        assert (float(st.params["w"]), float(st.slow["params"]["w"])) == (2.0, 7.0)
    # the first sync starts the slow copy from the trained weights (rho = 0)
    st = la(_state(2.0, 3.0, 7.0, 9.0, 35))
    assert float(st.slow["params"]["w"]) == 2.0 and float(st.params["w"]) == 2.0
    assert float(st.slow["batch_stats"]["m"]) == 3.0
    # a later sync: slow <- slow + (1 - rho)(fast - slow), fast <- slow (stats too)
    rho = 0.95 ** 5 * (45 / 100) ** 3
    st = la(_state(2.0, 3.0, 7.0, 9.0, 45))
    want_w, want_m = 7.0 + (1 - rho) * (2.0 - 7.0), 9.0 + (1 - rho) * (3.0 - 9.0)
    assert float(st.params["w"]) == pytest.approx(want_w, rel=1e-6)
    assert float(st.slow["params"]["w"]) == pytest.approx(want_w, rel=1e-6)
    assert float(st.batch_stats["m"]) == pytest.approx(want_m, rel=1e-6)
    # an epoch end that is no sync step: training continues from the slow copy, unchanged
    la3 = Lookahead(total_steps=90, steps_per_epoch=9, start_epochs=1, every=5)
    st = la3(_state(2.0, 3.0, 7.0, 9.0, 18))
    assert (float(st.params["w"]), float(st.slow["params"]["w"])) == (7.0, 7.0)
    assert float(st.batch_stats["m"]) == 9.0
    # any other step: untouched
    st = la(_state(2.0, 3.0, 7.0, 9.0, 47))
    assert (float(st.params["w"]), float(st.slow["params"]["w"])) == (2.0, 7.0)


def test_lookahead_in_the_trainer_keeps_params_equal_to_the_slow_copy_after_each_epoch():
    x, y = tiny_dataset(64)
    trainer = tiny_trainer()
    trainer.lookahead = Lookahead(total_steps=12, steps_per_epoch=4, start_epochs=1, every=2)
    trainer.steps_per_call = 1
    state = trainer.init_state(jax.random.key(0), x[:1])
    assert all(a is not b for a, b in zip(jax.tree.leaves(state.params),
                                          jax.tree.leaves(state.slow["params"])))
    data = trainer.put(x, y)
    for epoch in (1, 2, 3):
        state, loss = trainer.train_epoch(state, data, 16, jax.random.key(epoch), progress=False)
        if epoch >= 2:
            for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.slow["params"])):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(state.step) == 12 and np.isfinite(loss)


def test_lookahead_rejects_empty_runs():
    with pytest.raises(ValueError):
        Lookahead(total_steps=0, steps_per_epoch=10)
