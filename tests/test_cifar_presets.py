"""The CIFAR experiment's gpu (speed-run) preset on CPU: its optimizer groups, an end-to-end
run, and --seeds."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cifar_inception, cifar_simple_cnn
from jaxhw import config
from jaxhw.models.cnn import whitening_kernel
from jaxhw.data import normalize
from tests.conftest import write_image_split


def _parse(*argv):
    """cifar_inception's config for a command line, presets applied."""
    return config.parse(cifar_inception.Config, "", list(argv), cifar_inception.PRESETS)


def _gpu_cfg(**overrides):
    argv = ["--preset", "gpu"] + [a for k, v in overrides.items()
                                  for a in (f"--{k.replace('_', '-')}", str(v))]
    return config.parse(cifar_inception.Config, "", argv, cifar_inception.PRESETS)


@pytest.mark.slow
def test_param_groups_of_the_speedrun_net():
    cfg = _gpu_cfg(widths="16,16,16")
    model = cifar_inception.build_model(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    groups = cifar_inception.param_groups(params)
    flat = {jax.tree_util.keystr(p): g for p, g in jax.tree_util.tree_flatten_with_path(groups)[0]}
    assert flat["['whiten']['kernel']"] == "frozen"
    assert flat["['whiten']['bias']"] == "whiten_bias"
    assert flat["['Dense_0']['kernel']"] == "kernel"
    bn_biases = [k for k, g in flat.items() if g == "bn_bias"]
    assert bn_biases and all("BatchNorm" in k and k.endswith("['bias']") for k in bn_biases)
    assert set(flat.values()) == {"frozen", "whiten_bias", "kernel", "bn_bias", "other"}


def test_optimizer_freezes_the_stem_scales_bn_biases_and_stops_the_stem_bias():
    cfg = _gpu_cfg(whiten_bias_epochs=2)
    tx = cifar_inception.make_optimizer(cfg, steps_per_epoch=1)
    params = {"whiten": {"kernel": jnp.ones((2, 2, 3, 24)), "bias": jnp.zeros(24)},
              "BatchNorm_0": {"bias": jnp.zeros(4)}, "Conv_0": {"bias": jnp.zeros(4)}}
    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    lr0 = float(cifar_inception.make_schedule(cfg, cfg.epochs)(0))
    assert lr0 == pytest.approx(0.2 * cfg.lr)
    updates, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["whiten"]["kernel"], 0.0)
    other = -lr0 * (1 + cfg.momentum)  # Nesterov's first step on a gradient of 1
    np.testing.assert_allclose(updates["Conv_0"]["bias"], other, rtol=1e-5)
    np.testing.assert_allclose(updates["BatchNorm_0"]["bias"], cfg.bn_bias_lr * other, rtol=1e-5)
    np.testing.assert_allclose(updates["whiten"]["bias"], other, rtol=1e-5)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["whiten"]["bias"], 0.0)  # frozen after 2 epochs
    assert np.all(np.asarray(updates["Conv_0"]["bias"]) < 0)


@pytest.mark.slow
def test_gpu_preset_runs_end_to_end_on_cpu(tmp_path, capsys):
    data = tmp_path / "data"
    write_image_split(data, "cifar10", "train", 2048, (32, 32, 3), seed=1)
    write_image_split(data, "cifar10", "test", 200, (32, 32, 3), seed=2)
    out = tmp_path / "run"
    # the preset as it is but for narrower stages (the recipe's code paths, a CPU's seconds)
    cifar_inception.main(["--preset", "gpu", "--train-limit", "2048", "--epochs", "1",
                          "--widths", "16,32,32", "--data-dir", str(data),
                          "--checkpoint-dir", str(out)])
    text = capsys.readouterr().out
    assert "Accuracy of the network on the 200 test images" in text
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 1 and results["config"]["whiten"] is True
    assert results["steps_per_call"] == 1 and results["compile_s"] > 0
    # the whitening stem: set from the data and still frozen after training
    import orbax.checkpoint as ocp
    saved = ocp.StandardCheckpointer().restore((out / "1" / "state").resolve())
    images = np.load(data / "cifar10" / "train.npz")["images"]
    pick = np.random.default_rng(0).permutation(len(images))[:5000]
    want = whitening_kernel(np.asarray(normalize(images[pick], cifar_inception.CIFAR_MEAN,
                                                 cifar_inception.CIFAR_STD)))
    np.testing.assert_array_equal(np.asarray(saved["params"]["whiten"]["kernel"]), want)
    assert np.any(np.asarray(saved["params"]["whiten"]["bias"]) != 0)  # the bias trained
    assert set(saved["slow"]) == {"params", "batch_stats"}


@pytest.mark.slow
def test_seeds_train_back_to_back_and_compile_once(tiny_data, tmp_path, capsys):
    out = tmp_path / "seeds"
    cifar_simple_cnn.main(["--data-dir", str(tiny_data), "--checkpoint-dir", str(out),
                           "--seeds", "2", "--seed", "3", "--epochs", "1"])
    text = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [r["seed"] for r in results["seeds"]] == [3, 4]
    first, second = results["seeds"]
    assert first["compile_s"] > 0 and second["compile_s"] < 0.05 * first["compile_s"]
    assert results["mean_accuracy"] == pytest.approx((first["accuracy"] + second["accuracy"]) / 2)
    assert {"std_accuracy", "device", "dtype", "mean_train_s"} <= set(results)
    for seed in (3, 4):
        per_seed = json.loads((out / f"seed_{seed}" / "results.json").read_text())
        assert per_seed["seed"] == seed
    assert "mean test accuracy" in text
    # the two seeds trained differently
    h3 = json.loads((out / "seed_3" / "history.json").read_text())
    h4 = json.loads((out / "seed_4" / "history.json").read_text())
    assert h3[0]["train_loss"] != h4[0]["train_loss"]


def test_seeds_refuse_an_existing_run_before_training(tiny_data, tmp_path, capsys):
    out = tmp_path / "seeds"
    (out / "seed_1" / "1").mkdir(parents=True)
    from jaxhw import cli
    with pytest.raises(SystemExit):
        cli.run(lambda: cifar_simple_cnn.main(["--data-dir", str(tiny_data), "--checkpoint-dir",
                                               str(out), "--seeds", "2"]))
    err = capsys.readouterr().err
    assert "seed_1" in err or "already" in err
    assert not (out / "seed_0").exists() or not any((out / "seed_0").iterdir())


def test_whitening_stem_of_the_stride_net_pools_to_15x15():
    """--whiten on the cpu preset's net: frozen 2x2 whitening (31x31) then a 2x2 pool, so the
    Inception module works at 15x15 as the 3x3 stem's net works at 16x16."""
    cfg = cifar_inception.Config(whiten=True, widths="16,32,32")
    model = cifar_inception.build_model(cfg)
    x = jnp.zeros((2, 32, 32, 3))
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    shapes = {k: v["__call__"][0].shape for k, v in state["intermediates"].items()
              if k != "__call__"}
    assert shapes["whiten"] == (2, 31, 31, 24)
    assert shapes["Inception_0"] == (2, 15, 15, 16)
    assert [s[1] for k, s in sorted(shapes.items()) if k.startswith("ResidualBlock")] == [8, 4]
    assert "ConvBN_0" not in variables["params"]  # no trained stem at 32x32


def test_cpu_preset_is_the_flags_defaults_and_its_test_time_views():
    """The cpu preset is the flags' defaults: 50 views at the end, image + mirror after
    every epoch; the gpu preset keeps airbench's six throughout."""
    cpu, gpu = _parse(), _parse("--preset", "gpu")
    assert cpu == _parse("--preset", "cpu")
    assert (cifar_inception.tta_level(cpu), cifar_inception.epoch_tta_level(cpu)) == (3, 1)
    assert (cifar_inception.tta_level(gpu), cifar_inception.epoch_tta_level(gpu)) == (2, None)
    assert [cifar_inception.tta_level(_parse("--tta", name))
            for name in ("none", "mirror", "six", "grid")] == [0, 1, 2, 3]


@pytest.mark.parametrize("flag", ["--no-tta", "--no-tta-grid", "--tta-translate"])
def test_the_former_test_time_view_flags_point_to_tta(flag, capsys):
    with pytest.raises(SystemExit) as e:
        cifar_inception.main([flag])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tta none|mirror|six|grid" in err


def test_a_preset_not_kept_is_one_line_pointing_to_the_history(capsys):
    """Any preset name but cpu and gpu (the earlier cpu presets among them) is refused in
    one line that names docs/history.md, which names the commit that still runs them."""
    with pytest.raises(SystemExit) as e:
        cifar_inception.main(["--preset", "cpu-old"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "docs/history.md" in err and "cpu, gpu" in err


def _train_flops_per_image(cfg) -> float:
    """XLA's count of the floating-point operations of one training step's forward and
    backward pass, per image (batch 8)."""
    model = cifar_inception.build_model(cfg)
    x, y = jnp.zeros((8, 32, 32, 3)), jnp.zeros(8, jnp.int32)
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True,
                                mutable=["batch_stats"])
        return cifar_inception.classification_loss()(logits, y, jnp.ones(8))[0]

    cost = jax.jit(jax.grad(loss)).lower(variables["params"]).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"] / 8


@pytest.mark.slow
def test_cpu_preset_trains_with_less_compute_than_wider_stages():
    """The cpu preset buys its 14 epochs with narrower stages: its whole training (epochs x
    FLOPs per image) is cheaper than the ablation's wide_stages row (12 epochs)."""
    work = {name: cfg.epochs * _train_flops_per_image(cfg) for name, cfg in
            [("cpu", _parse()), ("wide", _parse("--widths", "64,128,256", "--epochs", "12"))]}
    assert work["cpu"] < 0.8 * work["wide"]
    assert 1.2e9 < work["cpu"] < 1.5e9


def test_no_tta_and_other_models_need_no_other_flag():
    """The defaults' test-time views and whitening stem give way: --tta none evaluates plain
    images throughout, and --model inception_cnn has no whitening stem."""
    cfg = config.parse(cifar_inception.Config, "", ["--tta", "none"], cifar_inception.PRESETS)
    assert cifar_inception.tta_level(cfg) == 0 and cifar_inception.epoch_tta_level(cfg) is None
    cfg = config.parse(cifar_inception.Config, "", ["--model", "inception_cnn"],
                       cifar_inception.PRESETS)
    params = cifar_inception.build_model(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert "whiten" not in params["params"]
