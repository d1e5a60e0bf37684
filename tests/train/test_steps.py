import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.experiment import Images, RunConfig, image_plan, train_and_evaluate
from jaxhw.train import Checkpoints, classification_loss
from jaxhw.train.xla_options import CPU_CONV_OPTIONS
from tests.tiny import tiny_dataset, tiny_trainer


def test_classification_loss_by_hand():
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = jnp.array([0, 0, 1])
    mask = jnp.array([1.0, 1.0, 0.0])  # the third example is padding
    total, count = classification_loss()(logits, labels, mask)
    expected = -np.log(np.exp(2) / (np.exp(2) + 1)) - np.log(1 / (1 + np.e))
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    assert count == 2
    smoothed, _ = classification_loss(0.2)(logits[:1], labels[:1], mask[:1])
    logp = jax.nn.log_softmax(logits[0])
    np.testing.assert_allclose(smoothed, -(0.9 * logp[0] + 0.1 * logp[1]), rtol=1e-6)


def test_train_steps_lower_the_loss_and_update_batch_stats():
    trainer = tiny_trainer()
    x, y = tiny_dataset(256)
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    stats0 = jax.tree.map(np.asarray, state.batch_stats)
    before = trainer.evaluate(state, data).loss
    for epoch in range(8):
        state, _ = trainer.train_epoch(state, data, 32, jax.random.key(epoch))
    after = trainer.evaluate(state, data)
    assert int(state.step) == 8 * 8
    assert after.loss < 0.7 * before
    assert after.accuracy > 0.6
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), stats0, state.batch_stats)
    assert all(jax.tree.leaves(moved))


def test_train_step_donates_the_old_state():
    trainer = tiny_trainer()
    x, y = tiny_dataset(64)
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    old_leaf = jax.tree.leaves(state.params)[0]
    trainer.train_epoch(state, data, 32, jax.random.key(0), progress=False)
    assert old_leaf.is_deleted()


def test_evaluation_uses_running_statistics():
    """In eval mode an example's prediction must not depend on the rest of its batch."""
    trainer = tiny_trainer()
    x, y = tiny_dataset(40)
    state = trainer.init_state(jax.random.key(0), x[:1])
    full = trainer.evaluate(state, trainer.put(x, y), batch_size=40).predictions
    part = trainer.evaluate(state, trainer.put(x[:7], y[:7]), batch_size=8).predictions
    np.testing.assert_array_equal(full[:7], part)


def test_same_seed_same_metrics():
    x, y = tiny_dataset(128)

    def run(seed):
        trainer = tiny_trainer()
        data = trainer.put(x, y)
        state = trainer.init_state(jax.random.key(seed), x[:1])
        metrics = []
        for epoch in (1, 2):
            key = jax.random.fold_in(jax.random.key(seed), epoch)
            state, loss = trainer.train_epoch(state, data, 16, key, progress=False)
            result = trainer.evaluate(state, data)
            metrics.append((loss, result.loss, result.accuracy))
        return metrics

    assert run(1) == run(1)
    assert run(1) != run(2)


@pytest.mark.slow
def test_buckets_of_different_shapes_train_and_evaluate_together():
    trainer = tiny_trainer()
    x, y = tiny_dataset(96)
    small, small_y = x[:40, :6, :6], y[:40]  # a second input shape: compiles separately
    buckets = [trainer.put(x[40:], y[40:]), trainer.put(small, small_y)]
    state = trainer.init_state(jax.random.key(0), x[:1])
    state, _ = trainer.train_epoch(state, buckets, 8, jax.random.key(1))
    assert int(state.step) == 56 // 8 + 40 // 8
    result = trainer.evaluate(state, buckets, batch_size=16)
    np.testing.assert_array_equal(result.labels, np.concatenate([y[40:], small_y]))
    assert result.predictions.shape == (96,)


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA CPU compile options")
def test_compiler_options_reach_both_steps():
    x, y = tiny_dataset(64)
    bad = tiny_trainer(compiler_options={"xla_cpu_experimental_ynn_fusion_type": "NO_SUCH_TYPE"})
    data = bad.put(x, y)
    state = bad.init_state(jax.random.key(0), x[:1])
    with pytest.raises(Exception, match="NO_SUCH_TYPE"):
        bad.evaluate(state, data)
    with pytest.raises(Exception, match="NO_SUCH_TYPE"):
        bad.train_epoch(state, data, 32, jax.random.key(1), progress=False)
    # Valid options change the speed only.
    results = []
    for options in (None, CPU_CONV_OPTIONS):
        trainer = tiny_trainer(compiler_options=options)
        state = trainer.init_state(jax.random.key(0), x[:1])
        state, loss = trainer.train_epoch(state, data, 32, jax.random.key(1), progress=False)
        results.append((loss, trainer.evaluate(state, data).loss))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5)


def _tiny_run(trainer, folder):
    """One epoch of ``trainer`` on tiny images through the experiment runner; returns
    results.json's entries and the trained state restored from the run's checkpoint."""
    x, y = tiny_dataset(96)
    plan = image_plan("tiny", trainer, Images(x, y, x, y, ("red", "green", "blue")),
                      epochs=1, batch_size=16)
    results = train_and_evaluate("tiny", RunConfig(checkpoint_dir=str(folder),
                                                   compile_cache="off"), plan)
    state, _ = Checkpoints(folder).restore(plan.init_state(0))
    return results, state, plan.test


def test_epoch_evaluation_takes_its_own_views_and_the_final_one_all(tmp_path):
    """With ``epoch_tta`` the evaluation after every epoch averages fewer test-time views
    (cheaper) than the final evaluation, in programs of their own."""
    trainer = tiny_trainer(tta=2, epoch_tta=0)
    results, state, data = _tiny_run(trainer, tmp_path / "fewer")
    plain = trainer.evaluate(state, data, tta=0)
    assert results["history"][-1]["eval_loss"] == pytest.approx(plain.loss, rel=1e-6)
    assert results["history"][-1]["eval_accuracy"] == plain.accuracy
    assert results["test_loss"] == pytest.approx(trainer.evaluate(state, data).loss, rel=1e-6)
    assert results["test_loss"] != pytest.approx(plain.loss, rel=1e-6)  # the views count
    names = [p["program"] for p in results["program_list"]]
    assert sorted(n for n in names if n.startswith("eval")) == ["eval", "eval tta=0"]
    # without epoch_tta both evaluations are the same program
    same = tiny_trainer(tta=2)
    results, _, _ = _tiny_run(same, tmp_path / "same")
    assert results["history"][-1]["eval_loss"] == pytest.approx(results["test_loss"], rel=1e-6)
    assert [p["program"] for p in results["program_list"]].count("eval") == 1


def test_evaluation_reads_the_device_once_per_split(monkeypatch):
    """Every batch's rows are gathered and its results kept on the device: the host reads
    arrays only inside one ``jax.device_get`` at the end (on a CPU, JAX's transfer guard does not stop such reads, so a spy on the
    array's host value counts them), and the figures equal the model's own predictions."""
    from jax._src import array

    reads = {"outside": 0, "fetches": 0}
    fetching = []
    value = array.ArrayImpl._value

    def spy_value(self):
        if not fetching:
            reads["outside"] += 1
        return value.fget(self)

    device_get = jax.device_get

    def spy_device_get(tree):
        reads["fetches"] += 1
        fetching.append(True)
        try:
            return device_get(tree)
        finally:
            fetching.pop()

    x, y = tiny_dataset(70)  # 70 rows in batches of 16: a padded last batch
    trainer = tiny_trainer()
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    trainer.evaluate(state, data, batch_size=16)  # compiled before the count
    monkeypatch.setattr(array.ArrayImpl, "_value", property(spy_value))
    monkeypatch.setattr(jax, "device_get", spy_device_get)
    with jax.transfer_guard_device_to_host("disallow"):  # enforced on accelerators
        result = trainer.evaluate(state, data, batch_size=16)
    assert reads == {"outside": 0, "fetches": 1}
    monkeypatch.undo()
    logits = trainer.model.apply(state.variables(), trainer.preprocess(
        jax.random.key(0), jnp.asarray(x), False))
    assert len(result.predictions) == 70
    np.testing.assert_array_equal(result.predictions, np.asarray(jnp.argmax(logits, -1)))
    assert result.accuracy == float(np.mean(result.predictions == y))


@pytest.mark.parametrize("level", [1, 2])
def test_test_time_views_are_one_forward_pass_with_the_same_logits(level):
    from jaxhw.data.pipeline import tta_views
    from jaxhw.models import BetterNet
    from jaxhw.models.cnn import conv_stem
    from jaxhw.train.steps import _apply, eval_logits
    model = BetterNet(stem=conv_stem(8), widths=(16, 16), blocks=(0, 1))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    views = jax.jit(lambda v, x: eval_logits(model, v, x, level))
    apart = sum(w * _apply(model, variables, view, False)[0] for w, view in tta_views(x, level))
    np.testing.assert_allclose(views(variables, x), apart, rtol=1e-5, atol=1e-6)
    # the program holds the network's convolutions once, not once per view
    plain = jax.jit(lambda v, x: eval_logits(model, v, x, 0))
    count = lambda f: f.lower(variables, x).as_text().count("stablehlo.convolution")  # noqa: E731
    assert count(views) == count(plain) > 0
