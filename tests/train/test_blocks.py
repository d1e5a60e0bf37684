"""Several optimizer steps per device call give the steps of one call per step."""

import jax
import numpy as np
import pytest

from jaxhw.train import Hook
from jaxhw.train.compile_cache import enable_compile_cache
from tests.tiny import tiny_dataset, tiny_trainer


class Recorder(Hook):
    def __init__(self):
        self.steps: list[tuple[int, int, float]] = []

    def on_losses(self, epoch, first_step, losses):
        self.steps += [(epoch, first_step + k, float(l)) for k, l in enumerate(losses)]


def _curve(block: int, buckets: bool, epochs: int = 2, run: int = 0):
    x, y = tiny_dataset(200)
    trainer = tiny_trainer(steps_per_call=block, bucket_run=run)
    # buckets: 7 and 4 batches of 16, so blocks of 5 make calls of 4 (the second call of
    # the first bucket masks one slot), the runs of 4 that single steps are given
    data = ([trainer.put(x[:120], y[:120]), trainer.put(x[120:184, :6, :6], y[120:184])]
            if buckets else trainer.put(x, y))
    state = trainer.init_state(jax.random.key(0), x[:1])
    recorder = Recorder()
    for epoch in range(1, epochs + 1):
        state, _ = trainer.train_epoch(state, data, 16, jax.random.key(epoch), epoch,
                                       hooks=[recorder], progress=False)
    return recorder.steps, state, trainer


@pytest.mark.slow
@pytest.mark.parametrize("buckets", [False, True], ids=["one_shape", "buckets"])
def test_blocks_give_the_loss_curve_of_single_steps(buckets):
    # Blocks of 5 over 12 batches: 3 calls of 4 (balanced). With buckets, both take runs
    # of 4 batches of one bucket, so the steps are the same.
    single, state1, t1 = _curve(1, buckets, run=4)
    block, state5, t5 = _curve(5, buckets)
    per_epoch = 12 if not buckets else 120 // 16 + 64 // 16
    assert [(e, s) for e, s, _ in block] == [(e, s) for e in (1, 2) for s in range(per_epoch)]
    assert [(e, s) for e, s, _ in single] == [(e, s) for e, s, _ in block]
    np.testing.assert_allclose([l for *_, l in block], [l for *_, l in single], rtol=1e-5,
                               atol=1e-6)
    assert int(state5.step) == int(state1.step) == 2 * per_epoch
    for a, b in zip(jax.tree.leaves(state5.params), jax.tree.leaves(state1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # One program per input shape: every call of a bucket has its length (4 here).
    programs = sorted((c[0], c[1]) for c in t5.compiled if c[0].startswith("train"))
    assert [name for name, _ in programs] == (["train x4", "train x4"] if buckets
                                              else ["train x4"])
    assert t5.block == 5 and t5.compile_s > 0


def test_blocks_skip_nothing_at_the_end_of_an_epoch():
    """A last block shorter than the others runs only its own steps."""
    steps, state, _ = _curve(50, False, epochs=1)
    assert len(steps) == 12 and int(state.step) == 12


def test_auto_block_on_a_cpu_is_one_step_for_convolutions_only():
    """XLA's CPU backend runs convolutions inside loops many times slower."""
    import flax.linen as nn
    import optax

    from jaxhw.train import Trainer

    class Mlp(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3)(x.reshape(x.shape[0], -1).astype(np.float32))

    x, y = tiny_dataset(64)
    for model, expected in ((tiny_trainer().model, 1), (Mlp(), 4)):
        trainer = Trainer(model, optax.sgd(0.1), log_every=4)
        state = trainer.init_state(jax.random.key(0), x[:1])
        trainer.train_epoch(state, trainer.put(x, y), 16, jax.random.key(1), progress=False)
        assert trainer.block == (expected if jax.default_backend() == "cpu" else 4)


def test_compile_cache_fills_and_unwritable_folder_only_warns(tmp_path):
    previous = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compile_cache(tmp_path / "cache") == (tmp_path / "cache").resolve()
        _curve(3, False, epochs=1)
        assert any((tmp_path / "cache").iterdir())
        locked = tmp_path / "locked"
        locked.write_text("a file, not a folder")
        with pytest.warns(UserWarning, match="not writable.*running without it"):
            assert enable_compile_cache(locked / "cache") is None
        assert jax.config.jax_compilation_cache_dir is None
        _curve(1, False, epochs=1)  # still trains
        assert enable_compile_cache("off") is None
    finally:
        enable_compile_cache(previous)


def test_a_compiled_block_has_no_conditional():
    """A GPU evaluates a conditional's predicate on the host: none may sit in the loop
    (the lookahead's rule included)."""
    import re

    from jaxhw.train.lookahead import Lookahead
    from jaxhw.train.steps import make_train_steps

    conditional = re.compile(r"\bconditional\(")  # the HLO instruction, not a name
    with_cond = jax.jit(lambda p, v: jax.lax.cond(p, lambda u: jax.numpy.sin(u) @ u,
                                                  lambda u: u.T, v))
    assert conditional.search(with_cond.lower(True, np.ones((64, 64))).compile().as_text())
    x, y = tiny_dataset(64)
    for lookahead in (None, Lookahead(total_steps=40, steps_per_epoch=4)):
        trainer = tiny_trainer(steps_per_call=4, lookahead=lookahead)
        state = trainer.init_state(jax.random.key(0), x[:1])
        block = make_train_steps(trainer.model, trainer.tx, trainer.loss_fn, trainer.mesh,
                                 trainer.preprocess, block=4, lookahead=lookahead)
        batches = np.zeros((8, 16), np.int32)
        hlo = block.lower(state, trainer.put(x, y), batches, np.int32(0),
                          np.int32(3)).compile().as_text()
        assert "while" in hlo  # the scan is there ...
        assert not conditional.search(hlo)  # ... and no lax.cond inside it


def test_the_planner_makes_nearly_every_call_a_full_block():
    """The BERT notebook's settings: 15,000 handout training reviews in 4 length buckets,
    batch 32. The bucket sizes are those of the real reviews, tokenised (uncased WordPiece,
    head+tail) at 256 tokens: 320, 1,529, 4,221 and 8,930 reviews up to 64, 128, 192 and
    256 tokens (bert_imdb.splits + jaxhw.data.text.tokenize + bucket_by_length)."""
    from jaxhw.train.loop import FULL_BLOCK_SHARE, full_block_share, plan_calls

    counts = [n // 32 for n in (320, 1529, 4221, 8930)]  # [10, 47, 131, 279] batches
    block = 50
    while full_block_share(counts, block) < FULL_BLOCK_SHARE:
        block -= 1
    calls = plan_calls(counts, 0, block, jax.random.key(0))
    full = sum(c == length for _, _, c, length in calls)
    assert full / len(calls) >= 0.9, (block, full, len(calls))
    assert block >= 8  # still several steps per call
    # One call length per bucket, and fewer masked slots than calls in each.
    for b, n in enumerate(counts):
        mine = [(c, length) for bucket, _, c, length in calls if bucket == b]
        assert len({length for _, length in mine}) == 1
        assert sum(length - c for c, length in mine) < len(mine)
    # Every batch of every bucket exactly once, and runs of one bucket per call.
    seen = sorted((b, first + k) for b, first, c, _ in calls for k in range(c))
    assert seen == [(b, i) for b, n in enumerate(counts) for i in range(n)]
    # The buckets' runs are mixed, not one bucket after the other.
    order = [b for b, _, _, _ in calls]
    assert sum(a != b for a, b in zip(order, order[1:])) > len(counts)


def test_one_bucket_keeps_its_batch_order():
    from jaxhw.train.loop import plan_calls
    assert plan_calls([12], 0, 5, None) == [(0, 0, 4, 4), (0, 4, 4, 4), (0, 8, 4, 4)]
    assert plan_calls([117], 0, 50, None) == [(0, 0, 39, 39), (0, 39, 39, 39), (0, 78, 39, 39)]
    assert plan_calls([13], 0, 5, None) == [(0, 0, 5, 5), (0, 5, 5, 5), (0, 10, 3, 5)]
    assert plan_calls([7], 5, 1, None) == [(0, i, 1, 1) for i in range(7)]


def test_deterministic_gpu_ops_is_an_option_xla_knows():
    from jaxhw.train.xla_options import DETERMINISTIC_OPTIONS, deterministic_options
    assert deterministic_options(True, "gpu") == DETERMINISTIC_OPTIONS
    assert deterministic_options(True, "cpu") is None and deterministic_options(False, "gpu") is None
    f = lambda v: v * 2  # noqa: E731
    jax.jit(f, compiler_options=DETERMINISTIC_OPTIONS).lower(1.0).compile()  # known, valid
    with pytest.raises(Exception, match="No such compile option"):
        jax.jit(f, compiler_options={"xla_gpu_determinstic_ops": "True"}).lower(1.0).compile()


def test_models_declare_their_convolutions_truthfully():
    """The automatic block reads a model's declared ``convolutional``; each model family
    declares it exactly when its forward pass holds a convolution."""
    import jax.numpy as jnp

    from jaxhw.inference import build_model

    cases = [("simple_cnn", {}, (1, 32, 32, 3)), ("inception_cnn", {}, (1, 32, 32, 3)),
             ("betternet", {"widths": [16, 16, 16]}, (1, 32, 32, 3)),
             ("vit", dict(img_size=28, patch_size=7, in_chans=1, num_classes=10,
                          embed_dim=16, depth=1, num_heads=2), (1, 28, 28, 1)),
             ("transformer", dict(input_lib_size=12, output_lib_size=12, dim=16, head_num=2,
                                  layer_num=1, ffn_dim=32, seq_len_max=8), None)]
    for family, args, shape in cases:
        model = build_model(family, args)
        inputs = ((jnp.zeros(shape),) if shape else
                  (jnp.ones((1, 6), jnp.int32), jnp.ones((1, 6), jnp.int32)))
        variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
        jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, *inputs))(variables))
        assert getattr(model, "convolutional", False) == ("conv_general_dilated" in jaxpr), family


def test_a_masked_slot_leaves_the_state_as_it_was():
    """A block of 4 slots with 3 valid steps gives the state and losses of a block of 3."""
    from jaxhw.train.steps import make_train_steps

    x, y = tiny_dataset(64)
    trainer = tiny_trainer()
    data = trainer.put(x, y)
    batches = np.arange(64, dtype=np.int32).reshape(4, 16)
    make = lambda n: make_train_steps(trainer.model, trainer.tx, trainer.loss_fn,  # noqa: E731
                                      trainer.mesh, trainer.preprocess, block=n)
    runs = {}
    for n in (3, 4):
        state = trainer.init_state(jax.random.key(0), x[:1])
        runs[n] = make(n)(state, data, batches, np.int32(0), np.int32(3))
    (s3, l3), (s4, l4) = runs[3], runs[4]
    np.testing.assert_array_equal(np.asarray(l4)[:3], np.asarray(l3))
    assert int(s4.step) == int(s3.step) == 3
    def host(a):  # typed PRNG keys (the state's rng) as their raw bits
        return np.asarray(jax.random.key_data(a) if jax.dtypes.issubdtype(
            a.dtype, jax.dtypes.prng_key) else a)

    for a, b in zip(jax.tree.leaves(s4), jax.tree.leaves(s3)):
        np.testing.assert_array_equal(host(a), host(b))
