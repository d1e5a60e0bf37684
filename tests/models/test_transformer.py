import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.models.transformer import (MultiHeadAttention, PositionalEncoding, Transformer,
                                      causal_mask, greedy_decode, padding_mask,
                                      positional_encoding_table, scaled_dot_product,
                                      target_mask)


def test_positional_encoding_table_by_hand():
    pe = positional_encoding_table(10, 6)
    assert pe.shape == (10, 6)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    pos, dim = 3, 6
    for i in range(3):
        angle = pos / 10000 ** (2 * i / dim)
        np.testing.assert_allclose(pe[pos, 2 * i], math.sin(angle), rtol=1e-6)
        np.testing.assert_allclose(pe[pos, 2 * i + 1], math.cos(angle), rtol=1e-6)


def test_positional_encoding_is_a_constant_added_to_the_prefix():
    module = PositionalEncoding(6, 10)
    x = jnp.ones((2, 4, 6))
    variables = module.init(jax.random.key(0), x)
    assert not variables.get("params")  # nothing learned
    expected = np.broadcast_to(1 + positional_encoding_table(10, 6)[:4], (2, 4, 6))
    np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="length must be <= 10"):
        module.apply(variables, jnp.ones((1, 11, 6)))


def _qkv(seed=0, b=2, h=2, lq=3, lk=5, d=4):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k1, (b, h, lq, d)), jax.random.normal(k2, (b, h, lk, d)),
            jax.random.normal(k3, (b, h, lk, d)))


def test_softmax_over_keys_and_scaling_by_sqrt_word_dim():
    q, k, v = _qkv(d=4)
    out, probs = scaled_dot_product(q, k, v, None)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)  # rows over keys sum to one
    assert not np.allclose(probs.sum(-2), 1.0)                  # ... columns do not
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / 2.0           # sqrt(word_dim = 4) = 2
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    np.testing.assert_allclose(out, np.einsum("bhqk,bhkd->bhqd", expected, v), rtol=1e-5, atol=1e-6)


def test_padded_keys_get_zero_attention():
    q, k, v = _qkv()
    tokens = jnp.array([[5, 6, 7, 0, 0], [5, 0, 0, 0, 0]])
    _, probs = scaled_dot_product(q, k, v, padding_mask(tokens))
    assert float(jnp.abs(probs[0, :, :, 3:]).max()) == 0.0
    assert float(jnp.abs(probs[1, :, :, 1:]).max()) == 0.0
    np.testing.assert_allclose(probs[1, :, :, 0], 1.0)


def test_mask_shapes():
    tokens = jnp.array([[4, 5, 0]])
    assert padding_mask(tokens).shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(causal_mask(3)[0, 0], np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(target_mask(tokens)[0, 0],
                                  [[1, 0, 0], [1, 1, 0], [1, 1, 0]])


def test_multi_head_attention_equals_a_numpy_reference():
    dim, heads, b, lq, lk = 8, 2, 2, 3, 4
    mha = MultiHeadAttention(dim, heads)
    kq, kk, kp = jax.random.split(jax.random.key(1), 3)
    query = jax.random.normal(kq, (b, lq, dim))
    key = jax.random.normal(kk, (b, lk, dim))
    mask = padding_mask(jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]]))
    params = mha.init(kp, query, key, key, mask)["params"]
    got = mha.apply({"params": params}, query, key, key, mask)

    p = jax.tree.map(np.asarray, params)
    lin = lambda x, name: x @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
    split = lambda x: x.reshape(b, -1, heads, dim // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(lin(np.asarray(query), "W_q")), split(lin(np.asarray(key), "W_k")), \
        split(lin(np.asarray(key), "W_v"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dim // heads)
    scores = np.where(np.asarray(mask), scores, -1e9)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    heads_out = (w @ v).transpose(0, 2, 1, 3).reshape(b, lq, dim)
    np.testing.assert_allclose(got, lin(heads_out, "W_o"), rtol=1e-5, atol=1e-5)


def test_attention_rejects_bad_head_count():
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3).init(jax.random.key(0), *(jnp.ones((1, 2, 10)),) * 3)


def tiny_transformer(**kw):
    return Transformer(12, 12, dim=16, head_num=2, layer_num=2, ffn_dim=32, seq_len_max=10, **kw)


def test_causal_mask_hides_future_target_tokens():
    model = tiny_transformer()
    src = jnp.array([[3, 4, 5, 6, 0, 0]])
    tgt = jnp.array([[1, 7, 8, 9, 10, 11]])
    params = model.init(jax.random.key(0), src, tgt)["params"]
    a = model.apply({"params": params}, src, tgt)
    b = model.apply({"params": params}, src, tgt.at[0, 4].set(3))
    assert a.shape == (1, 6, 12)
    np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_padded_source_tokens_do_not_change_the_output():
    model = tiny_transformer()
    tgt = jnp.array([[1, 7, 8]])
    params = model.init(jax.random.key(0), jnp.array([[3, 4, 0, 0]]), tgt)["params"]
    a = model.apply({"params": params}, jnp.array([[3, 4, 0, 0]]), tgt)
    b = model.apply({"params": params}, jnp.array([[3, 4, 0, 0, 0, 0]]), tgt)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
    model = tiny_transformer(dropout=0.5)
    src, tgt = jnp.array([[3, 4, 5]]), jnp.array([[1, 6, 7]])
    params = model.init(jax.random.key(0), src, tgt)["params"]
    run = lambda seed, train: model.apply({"params": params}, src, tgt, train=train,  # noqa: E731
                                          rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_array_equal(run(1, False), run(2, False))
    assert not np.allclose(run(1, True), run(2, True))


def test_torch_initialisation():
    model = tiny_transformer(init_style="torch")
    params = model.init(jax.random.key(0), jnp.ones((1, 3), int), jnp.ones((1, 3), int))["params"]
    emb = np.asarray(params["src_embed"]["embedding"])
    assert 0.8 < emb.std() < 1.2  # nn.Embedding: N(0, 1)
    ffn = params["encoder_0"]["FFN_0"]
    for name, fan_in in (("Dense_0", 16), ("Dense_1", 32)):  # nn.Linear: U(+-1/sqrt(fan_in))
        for leaf in ("kernel", "bias"):
            values = np.abs(np.asarray(ffn[name][leaf]))
            assert values.max() <= 1 / math.sqrt(fan_in) and values.max() > 0.7 / math.sqrt(fan_in)


def test_greedy_decode_under_jit_stops_at_eos():
    model = tiny_transformer(dropout=0.0)
    src = jnp.array([[3, 4, 5, 0], [6, 7, 0, 0]])
    params = model.init(jax.random.key(0), src, src)["params"]
    out = np.asarray(jax.jit(lambda p, s: greedy_decode(model, p, s, bos=1, eos=2, max_len=6))(
        params, src))
    assert out.shape == (2, 6) and (out[:, 0] == 1).all()
    for row in out:
        hits = np.flatnonzero(row == 2)
        if len(hits):
            assert (row[hits[0] + 1:] == 0).all()
