"""Mixed precision: bfloat16 computation with float32 parameters, for every model family."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhw import ops

from jaxhw.config import ConfigError
from jaxhw.data.preprocess import Preprocess
from jaxhw.models import BetterNet, InceptionCNN, SimpleCNN
from jaxhw.models.cnn import conv_stem
from jaxhw.models.transformer import Transformer
from jaxhw.models.vit import VisionTransformer
from jaxhw.train import Trainer, classification_loss
from jaxhw.train.precision import compute_dtype

BF16 = jnp.dtype(jnp.bfloat16)


def _tokens(shape, seed):
    return jax.random.randint(jax.random.key(seed), shape, 1, 11)


def _bert(dtype):
    from transformers import BertConfig

    from jaxhw.models.bert import BertClassifier
    config = BertConfig(vocab_size=12, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=16)
    return BertClassifier(config, "mean_cls", 16, dtype=dtype)


# name -> (build(dtype), example inputs)
CASES = {
    "simple_cnn": (lambda d: SimpleCNN(dtype=d),
                   (jax.random.normal(jax.random.key(0), (4, 32, 32, 3)),)),
    "inception_cnn": (lambda d: InceptionCNN(dtype=d),
                      (jax.random.normal(jax.random.key(0), (4, 32, 32, 3)),)),
    "betternet": (lambda d: BetterNet(stem=conv_stem(8), widths=(16, 32), blocks=(1, 1),
                                      dtype=d),
                  (jax.random.normal(jax.random.key(0), (4, 32, 32, 3)),)),
    "betternet_fast_conv": (lambda d: BetterNet(stem=conv_stem(8), widths=(16, 32), blocks=(1, 1),
                                                conv=ops.layers("fast").conv_module,
                                                max_pool=ops.max_pool, dtype=d),
                            (jax.random.normal(jax.random.key(0), (4, 32, 32, 3)),)),
    "vit": (lambda d: VisionTransformer(patch_size=7, embed_dim=32, depth=2, num_heads=4,
                                        dtype=d),
            (jax.random.normal(jax.random.key(0), (4, 28, 28, 1)),)),
    "transformer": (lambda d: Transformer(12, 12, dim=32, head_num=4, layer_num=2, ffn_dim=64,
                                          seq_len_max=10, dtype=d),
                    (_tokens((4, 9), 0), _tokens((4, 7), 1))),
    "bert": (_bert, (_tokens((4, 10), 0), jnp.ones((4, 10), jnp.int32).at[:, 7:].set(0))),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_logits_match_float32_with_the_same_parameters(name):
    build, inputs = CASES[name]
    variables = build(jnp.float32).init(jax.random.key(1), *inputs)
    # Initialising the bfloat16 model gives float32 parameters and statistics too.
    bf16_variables = build(BF16).init(jax.random.key(1), *inputs)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16_variables)} == {jnp.dtype(jnp.float32)}
    full = build(jnp.float32).apply(variables, *inputs)
    half = build(BF16).apply(variables, *inputs)
    assert full.dtype == jnp.float32 and half.dtype == BF16
    scale = float(jnp.max(jnp.abs(full))) + 1e-3
    err = float(jnp.max(jnp.abs(half.astype(jnp.float32) - full)))
    assert err < 0.05 * scale + 0.02, (err, scale)   # bfloat16 keeps ~3 significant digits
    assert err > 0.0  # ... and the computation really ran in bfloat16


@pytest.mark.slow
def test_bfloat16_train_steps_lower_the_loss_and_keep_float32_state():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    y = (x.reshape(256, -1, 3).mean(1).argmax(1)).astype(np.int32)  # brightest channel
    model = BetterNet(stem=conv_stem(8), widths=(16, 32), blocks=(0, 1), dtype=BF16)
    trainer = Trainer(model, optax.sgd(0.05, 0.9), loss_fn=classification_loss(),
                      preprocess=Preprocess((0.5,) * 3, (0.25,) * 3), log_every=8)
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    before = trainer.evaluate(state, data).loss
    for epoch in range(4):
        state, loss = trainer.train_epoch(state, data, 32, jax.random.key(epoch), progress=False)
    after = trainer.evaluate(state, data).loss
    assert after < 0.8 * before, (before, after)
    for tree in (state.params, state.batch_stats, state.opt_state):
        assert {leaf.dtype for leaf in jax.tree.leaves(tree)
                if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}


def test_dtype_names():
    assert compute_dtype("auto", "cpu") == jnp.float32
    assert compute_dtype("auto", "gpu") == BF16 and compute_dtype("auto", "tpu") == BF16
    assert compute_dtype("bfloat16") == BF16 and compute_dtype("float32") == jnp.float32
    assert compute_dtype("float16") == jnp.float16
    with pytest.raises(ConfigError, match="unknown --dtype 'float8'.*auto, bfloat16, float16"):
        compute_dtype("float8")


def _gpu(capability):
    """A stand-in for a jax GPU device (what compute_dtype reads of one)."""
    from types import SimpleNamespace
    return SimpleNamespace(platform="gpu", compute_capability=capability,
                           device_kind=f"GPU {capability}")


@pytest.mark.parametrize("capability, expected", [
    ("7.0", jnp.float16), ("7.5", jnp.float16),  # V100, T4: float16 tensor cores only
    ("8.0", BF16), ("8.6", BF16), ("8.9", BF16), ("9.0", BF16), ("10.0", BF16)])
def test_auto_dtype_follows_the_compute_capability(capability, expected):
    from jaxhw.train.precision import compute_capability
    assert compute_dtype("auto", _gpu(capability)) == expected
    assert compute_capability(_gpu(capability)) == capability
    assert compute_capability(jax.devices("cpu")[0]) is None
    assert compute_dtype("auto", jax.devices("cpu")[0]) == jnp.float32


def _float16_trainer(x, y, lr=0.05):
    model = BetterNet(stem=conv_stem(8), widths=(16, 32), blocks=(0, 1), dtype=jnp.float16)
    return Trainer(model, optax.sgd(lr, 0.9), loss_fn=classification_loss(),
                   preprocess=Preprocess((0.5,) * 3, (0.25,) * 3), log_every=8,
                   loss_scaling=True)


def _images(n=256):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return x, (x.reshape(n, -1, 3).mean(1).argmax(1)).astype(np.int32)


@pytest.mark.slow
def test_float16_training_with_loss_scaling_lowers_the_loss():
    x, y = _images()
    trainer = _float16_trainer(x, y)
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    assert float(state.loss_scale.scale) == 2.0 ** 15
    before = trainer.evaluate(state, data).loss
    for epoch in range(4):
        state, loss = trainer.train_epoch(state, data, 32, jax.random.key(epoch), progress=False)
    after = trainer.evaluate(state, data).loss
    assert np.isfinite(after) and after < 0.8 * before, (before, after)
    assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
def test_a_step_with_an_overflow_is_skipped_and_lowers_the_scale():
    from jaxhw.train.loss_scale import LossScale
    x, y = _images(64)
    trainer = _float16_trainer(x, y)
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    # A scale float16 cannot hold: the scaled loss, and so the gradients, overflow.
    state = state.replace(loss_scale=LossScale.create(initial=2.0 ** 100))
    before = jax.device_get(state.params)
    state, _ = trainer.train_epoch(state, data, 64, jax.random.key(1), progress=False)
    assert int(state.step) == 1
    assert float(state.loss_scale.scale) == 2.0 ** 99  # halved
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
        np.testing.assert_array_equal(a, b)  # the update was skipped
    # A finite step then updates, and a run of them raises the scale.
    ok = LossScale.create(initial=1024.0)  # 2 steps before the period's end
    state = state.replace(loss_scale=ok.replace(good_steps=jnp.asarray(ok.period - 2, jnp.int32)))
    for epoch in range(2):
        state, _ = trainer.train_epoch(state, data, 64, jax.random.key(2 + epoch), progress=False)
    assert float(state.loss_scale.scale) == 2048.0
    changed = any(not np.array_equal(a, b) for a, b in
                  zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))))
    assert changed


@pytest.mark.slow
def test_a_resumed_float16_run_restores_the_loss_scale(tmp_path):
    from jaxhw.train import open_run
    from jaxhw.train.loss_scale import LossScale
    x, y = _images(64)
    trainer = _float16_trainer(x, y)
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    state = state.replace(loss_scale=LossScale.create(initial=2.0 ** 100))  # halves once
    ckpt = open_run(tmp_path / "run", resume=False, overwrite=False)
    state, _ = trainer.train_epoch(state, data, 64, jax.random.key(1), progress=False)
    ckpt.save(1, state, {"epoch": 1})
    ckpt.close()
    fresh = trainer.init_state(jax.random.key(0), x[:1])
    restored, meta = open_run(tmp_path / "run", resume=True, overwrite=False).restore(fresh)
    assert float(restored.loss_scale.scale) == 2.0 ** 99 != float(fresh.loss_scale.scale)
    assert int(restored.loss_scale.good_steps) == 0 and meta["epoch"] == 1
