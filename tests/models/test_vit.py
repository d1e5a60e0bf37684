import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.models.vit import Attention, PatchEmbed, VisionTransformer
from jaxhw.train import count_params


def small_vit(**kw):
    args = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=16, depth=2,
                num_heads=4, mlp_ratio=2.0)
    return VisionTransformer(**{**args, **kw})


def test_patch_embed_shape():
    embed = PatchEmbed(28, 4, 8)
    x = jnp.ones((3, 28, 28, 1))
    out, _ = embed.init_with_output(jax.random.key(0), x)
    assert out.shape == (3, 49, 8) and embed.num_patches == 49


def test_patch_embed_is_a_strided_conv_over_patches():
    """Patch (row 1, col 2) of a 4-pixel grid only sees its own pixels."""
    embed = PatchEmbed(8, 4, 2)
    x = jnp.zeros((1, 8, 8, 1))
    params = embed.init(jax.random.key(0), x)
    base = embed.apply(params, x)
    bumped = embed.apply(params, x.at[0, 5, 3, 0].set(1.0))  # row 5 -> 1, col 3 -> 0
    changed = np.flatnonzero(np.abs(bumped - base).sum(-1)[0] > 0)
    np.testing.assert_array_equal(changed, [1 * 2 + 0])


def test_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="not divisible by patch size 5"):
        PatchEmbed(28, 5, 8).init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="embed_dim 10 is not divisible by num_heads 4"):
        Attention(10, 4).init(jax.random.key(0), jnp.ones((1, 5, 10)))


def test_attention_rows_sum_to_one():
    attn = Attention(16, 4)
    x = jax.random.normal(jax.random.key(1), (2, 5, 16))
    params = attn.init(jax.random.key(0), x)
    out, inter = attn.apply(params, x, mutable=["intermediates"])
    probs = inter["intermediates"]["attention"][0]
    assert out.shape == (2, 5, 16) and probs.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_class_token_and_positional_embedding_are_trained():
    model = small_vit()
    x = jax.random.normal(jax.random.key(2), (4, 28, 28, 1))
    params = model.init(jax.random.key(0), x)["params"]
    assert params["cls_token"].shape == (1, 1, 16)
    assert params["pos_embed"].shape == (1, 16 + 1, 16)

    def loss(p):
        return jnp.mean(model.apply({"params": p}, x) ** 2)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["cls_token"]).sum()) > 0
    assert float(jnp.abs(grads["pos_embed"]).sum()) > 0
    assert model.apply({"params": params}, x).shape == (4, 10)


def test_parameter_count_by_hand():
    d, n, depth, hidden = 16, 16, 2, 32
    params = small_vit().init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))["params"]
    patch = 7 * 7 * 1 * d + d
    tokens = d + (n + 1) * d                         # class token + positional embedding
    block = (2 * 2 * d                               # two LayerNorms
             + d * 3 * d + 3 * d + d * d + d         # qkv + proj
             + d * hidden + hidden + hidden * d + d)  # MLP
    head = 2 * d + d * 10 + 10                       # final norm + linear head
    assert count_params(params) == patch + tokens + depth * block + head


def test_wrong_input_shape_is_clear():
    with pytest.raises(ValueError, match="expects 1 channels"):
        small_vit().init(jax.random.key(0), jnp.ones((1, 28, 28, 3)))


def test_drop_path_drops_whole_examples_and_keeps_the_mean():
    from jaxhw.models.vit import DropPath

    x = jnp.ones((2000, 3, 4))
    out = np.asarray(DropPath(0.25).apply({}, x, train=True,
                                          rngs={"dropout": jax.random.key(0)}))
    per_example = out.reshape(2000, -1)
    np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75], rtol=1e-6)  # 0 or scaled
    assert (per_example == per_example[:, :1]).all()
    assert abs(out.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(DropPath(0.25).apply({}, x, train=False), x)


def test_stochastic_depth_only_changes_training_outputs():
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    model = small_vit(drop_path_rate=0.5)
    variables = model.init(jax.random.key(0), x)
    np.testing.assert_allclose(model.apply(variables, x), small_vit().apply(variables, x),
                               rtol=1e-6)
    a, b = (model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(k)})
            for k in (1, 2))
    assert not np.allclose(a, b)
