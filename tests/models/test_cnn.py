import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw.models import BetterNet, Inception, InceptionCNN, ResidualBlock, SimpleCNN, get_model
from jaxhw.train import count_params


def init(model, x):
    return model.init(jax.random.key(0), x, train=False)


def test_simple_cnn_shape_and_parameter_count():
    x = jnp.zeros((2, 32, 32, 3))
    variables = init(SimpleCNN(), x)
    assert SimpleCNN().apply(variables, x).shape == (2, 10)
    by_hand = ((7 * 7 * 3 * 8 + 8) + (4 * 4 * 8 * 16 + 16)      # convs
               + (400 * 100 + 100) + (100 * 80 + 80) + (80 * 10 + 10))  # dense 400-100-80-10
    assert count_params(variables["params"]) == by_hand == 52238


@pytest.mark.parametrize("size", [7, 8])
def test_inception_keeps_size_and_concatenates_channels(size):
    block = Inception(4, n1x1=2, n3x3_blue=3, n3x3=5, n5x5_blue=1, n5x5=2, pool_planes=3)
    x = jax.random.normal(jax.random.key(1), (2, size, size, 4))
    variables = init(block, x)
    y = block.apply(variables, x)
    assert y.shape == (2, size, size, 2 + 5 + 2 + 3) and block.out_planes == 12
    assert bool(jnp.all(y >= 0))  # every branch ends in ReLU


def test_inception_parameter_count_by_hand():
    block = Inception(4, n1x1=2, n3x3_blue=3, n3x3=5, n5x5_blue=1, n5x5=2, pool_planes=3)
    variables = init(block, jnp.zeros((1, 8, 8, 4)))

    def conv_bn(k, cin, cout):  # kernel + bias + BN scale and offset
        return k * k * cin * cout + cout + 2 * cout

    by_hand = (conv_bn(1, 4, 2)                          # b1
               + conv_bn(1, 4, 3) + conv_bn(3, 3, 5)     # b2
               + conv_bn(1, 4, 1) + conv_bn(5, 1, 2)     # b3
               + conv_bn(1, 4, 3))                       # b4 after the pool
    assert count_params(variables["params"]) == by_hand == 269
    assert len(variables["batch_stats"]) == 6  # one BN per convolution


def test_inception_rejects_wrong_channels():
    block = Inception(4, 2, 3, 5, 1, 2, 3)
    with pytest.raises(ValueError, match="expects 4 input channels"):
        init(block, jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize("cin, cout, stride, projection", [
    (8, 8, 1, False), (8, 16, 1, True), (8, 8, 2, True), (4, 8, 2, True)])
def test_residual_shortcut_is_identity_exactly_when_it_should_be(cin, cout, stride, projection):
    block = ResidualBlock(cin, cout, stride)
    x = jax.random.normal(jax.random.key(2), (2, 7, 7, cin))
    variables = init(block, x)
    assert block.has_projection == projection
    convs = [k for k in variables["params"] if k.startswith("Conv")]
    assert len(convs) == (3 if projection else 2)
    out = (7 + stride - 1) // stride
    assert block.apply(variables, x).shape == (2, out, out, cout)


def test_identity_shortcut_adds_the_input():
    block = ResidualBlock(8, 8, 1)
    x = jax.random.normal(jax.random.key(3), (2, 5, 5, 8))
    variables = init(block, x)
    params = dict(variables["params"])
    params["BatchNorm_1"] = {"scale": jnp.zeros(8), "bias": jnp.zeros(8)}  # main path -> 0
    y = block.apply({**variables, "params": params}, x)
    np.testing.assert_allclose(y, jax.nn.relu(x), atol=1e-6)


def test_residual_parameter_count_by_hand():
    v = init(ResidualBlock(4, 8, 2), jnp.zeros((1, 8, 8, 4)))
    by_hand = (3 * 3 * 4 * 8 + 2 * 8) + (3 * 3 * 8 * 8 + 2 * 8) + (4 * 8 + 2 * 8)
    assert count_params(v["params"]) == by_hand == 944
    v = init(ResidualBlock(8, 8, 1), jnp.zeros((1, 8, 8, 8)))
    assert count_params(v["params"]) == 2 * (3 * 3 * 8 * 8 + 2 * 8) == 1184


def test_batch_norm_train_vs_eval():
    block = ResidualBlock(3, 3, 1)
    x = 5 + 3 * jax.random.normal(jax.random.key(4), (16, 6, 6, 3))
    variables = init(block, x)
    train_out, updates = block.apply(variables, x, train=True, mutable=["batch_stats"])
    # Train mode updates the running statistics; eval mode reads them and leaves them alone.
    before = variables["batch_stats"]["BatchNorm_0"]["mean"]
    after = updates["batch_stats"]["BatchNorm_0"]["mean"]
    assert not np.allclose(before, after)
    eval_full = block.apply(variables, x, train=False)
    eval_one = block.apply(variables, x[:1], train=False)
    np.testing.assert_allclose(eval_full[:1], eval_one, atol=1e-5)
    train_one = block.apply(variables, x[:2], train=True, mutable=["batch_stats"])[0]
    assert not np.allclose(train_out[:1], train_one[:1], atol=1e-3)  # batch statistics used


@pytest.mark.slow
def test_inception_cnn_and_betternet_shapes():
    x = jnp.zeros((2, 32, 32, 3))
    for model in (InceptionCNN(), BetterNet(stem=conv_stem(8), widths=(16, 32, 64), blocks=(1, 1, 1))):
        variables = init(model, x)
        assert model.apply(variables, x).shape == (2, 10)
        out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert out.shape == (2, 10)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*betternet"):
        get_model("resnet")


# ---------------------------------------------------------------- the speed-run options

from jaxhw.models.cnn import conv_stem, dense_head, image_patches, whitening_kernel, whitening_stem  # noqa: E402,E501


def test_image_patches_by_hand():
    x = np.arange(2 * 3 * 3 * 1, dtype=np.float64).reshape(2, 3, 3, 1)
    p = image_patches(x, 2)
    assert p.shape == (2 * 2 * 2, 4)
    np.testing.assert_array_equal(p[0], [0, 1, 3, 4])    # image 0, top-left window (HWC order)
    np.testing.assert_array_equal(p[3], [4, 5, 7, 8])    # image 0, bottom-right window
    np.testing.assert_array_equal(p[4], [9, 10, 12, 13])


def test_whitening_conv_makes_the_patch_covariance_the_identity():
    rng = np.random.default_rng(0)
    # correlated "images": smooth random fields with unequal channel scales
    base = rng.normal(size=(400, 9, 9, 3))
    x = (base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) * np.array([1.0, 2.0, 0.5])
    kernel = whitening_kernel(x, patch=2, eps=1e-9)
    assert kernel.shape == (2, 2, 3, 24) and kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])
    out = jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), jnp.asarray(kernel), (1, 1),
                                       "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    first = np.asarray(out[..., :12], np.float64).reshape(-1, 12)
    cov = first.T @ first / len(first)
    np.testing.assert_allclose(cov, np.eye(12), atol=1e-3)
    # ordered from the strongest direction of the data to the weakest
    raw = image_patches(x, 2)
    spread = [np.var(raw @ kernel[..., k].reshape(-1)) for k in range(12)]
    assert np.all(np.diff(np.asarray([np.linalg.norm(kernel[..., k]) for k in range(12)])) >= -1e-6)
    assert np.allclose(spread, 1.0, atol=1e-2)


@pytest.mark.slow
def test_speedrun_betternet_shapes_and_head():
    model = BetterNet(widths=(16, 32, 32), blocks=(1, 1, 1), stem=whitening_stem,
                      head=dense_head("max", 1 / 9), act=jax.nn.gelu,
                      norm=functools.partial(nn.BatchNorm, momentum=0.6, epsilon=1e-12,
                                             use_scale=False))
    x = jnp.ones((2, 32, 32, 3))
    variables = init(model, x)
    params = variables["params"]
    assert params["whiten"]["kernel"].shape == (2, 2, 3, 24)
    assert "bias" not in params["Dense_0"]
    assert not any("scale" in jax.tree_util.keystr(path)
                   for path, _ in jax.tree_util.tree_flatten_with_path(params)[0])
    _, inter = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    shapes = {k: v["__call__"][0].shape for k, v in inter["intermediates"].items()
              if k.startswith(("whiten", "Inception", "ResidualBlock"))}
    assert shapes == {"whiten": (2, 31, 31, 24), "Inception_0": (2, 15, 15, 16),
                      "ResidualBlock_0": (2, 15, 15, 16), "ResidualBlock_1": (2, 8, 8, 32),
                      "ResidualBlock_2": (2, 4, 4, 32)}
    # the head: (max over the 4x4 map) @ kernel / 9
    features = inter["intermediates"]["ResidualBlock_2"]["__call__"][0].max(axis=(1, 2))
    np.testing.assert_allclose(model.apply(variables, x),
                               features @ params["Dense_0"]["kernel"] / 9, rtol=1e-5, atol=1e-6)


def test_batch_norm_settings_reach_every_block():
    model = ResidualBlock(8, 16, norm=functools.partial(nn.BatchNorm, momentum=0.5,
                                                        use_scale=False))
    x = jax.random.normal(jax.random.key(1), (4, 6, 6, 8))
    variables = init(model, x)
    assert all("scale" not in v for v in variables["params"].values())
    assert len(variables["batch_stats"]) == 3  # two in the main path, one on the shortcut
    _, upd = model.apply(variables, x, train=True, capture_intermediates=True,
                         mutable=["batch_stats", "intermediates"])
    # momentum 0.5: each running mean moved halfway from 0 to its batch mean
    for conv, bn in (("Conv_0", "BatchNorm_0"), ("Conv_2", "BatchNorm_2")):
        y = upd["intermediates"][conv]["__call__"][0]
        np.testing.assert_allclose(upd["batch_stats"][bn]["mean"], 0.5 * y.mean(axis=(0, 1, 2)),
                                   rtol=1e-5, atol=1e-6)


def test_betternet_refuses_unknown_options():
    with pytest.raises(ValueError, match="pool must be 'avg' or 'max'"):
        dense_head("min")
    with pytest.raises(ValueError, match="differ in length"):
        init(BetterNet(widths=(16, 32), blocks=(1,)), jnp.ones((1, 32, 32, 3)))


def test_the_default_stem_and_head_keep_their_parameter_paths():
    net = BetterNet(stem=conv_stem(8), widths=(16, 16), blocks=(0, 1))
    params = jax.eval_shape(functools.partial(init, net), jnp.ones((1, 32, 32, 3)))["params"]
    assert params["ConvBN_0"]["Conv_0"]["kernel"].shape == (3, 3, 3, 8)
    assert params["Dense_0"]["bias"].shape == (10,)


def test_compute_then_pool_halves_after_the_inception_module_and_each_first_block():
    """downsample="pool": Inception at the whitening stem's 31x31, then 15 -> 7 -> 3 with
    stride-1 blocks, whose shortcut is the identity where the width stays."""
    def net(downsample):
        return BetterNet(widths=(16, 32, 32), blocks=(0, 1, 2), stem=whitening_stem,
                         head=dense_head("max", 1 / 9), downsample=downsample)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)    # shapes only: traced, not run
    variables = jax.eval_shape(functools.partial(init, net("pool")), x)
    _, state = jax.eval_shape(functools.partial(
        net("pool").apply, capture_intermediates=True, mutable=["intermediates"]), variables, x)
    sizes = {k: v["__call__"][0].shape[1] for k, v in state["intermediates"].items()
             if k != "__call__"}
    assert sizes["Inception_0"] == 31
    assert [sizes[f"ResidualBlock_{i}"] for i in range(3)] == [15, 7, 3]
    assert "Conv_2" in variables["params"]["ResidualBlock_0"]        # 16 -> 32: projection
    assert "Conv_2" not in variables["params"]["ResidualBlock_1"]    # 32 -> 32, stride 1
    with pytest.raises(ValueError, match="downsample must be"):
        jax.eval_shape(functools.partial(init, net("avg")), x)


def test_a_record_names_its_downsampling_and_older_records_build_the_stride_layout():
    from jaxhw.inference import build_model
    assert build_model("betternet", {"whiten": True, "downsample": "pool"}).downsample == "pool"
    assert build_model("betternet", {}).downsample == "stride"
