"""Every experiment's command line: --help explains every flag; bad setups fail clearly."""

import importlib
import pkgutil
import time

import pytest

import experiments
from jaxhw import cli, config
from jaxhw.data import sources

MODULES = sorted(m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.ispkg)


def test_there_are_experiments():
    assert "cifar_simple_cnn" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_help_explains_every_flag(name, capsys):
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    import dataclasses
    for field in dataclasses.fields(module.Config):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, flag
        assert field.metadata.get("help"), f"{name}: {flag} has no help text"


@pytest.mark.parametrize("name", [m for m in MODULES if m != "transformer_toy"])
def test_offline_without_data_fails_fast(name, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(sources, "reachable", lambda url, **kw: False)
    module = importlib.import_module(f"experiments.{name}")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        args = ["--checkpoint-dir", str(tmp_path / "ckpt")]
        args += ["--out", str(tmp_path / "out")] if name == "vit_sweep" else []
        cli.run(lambda: module.main(args))
    assert time.perf_counter() - start < 10
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no data for ")
    assert "--data-dir" in err and "JAXHW_DATA_DIR" in err


def test_resume_without_checkpoint_is_a_clear_error(tiny_data, tmp_path, capsys):
    module = importlib.import_module("experiments.cifar_simple_cnn")
    with pytest.raises(SystemExit):
        cli.run(lambda: module.main(["--data-dir", str(tiny_data), "--resume",
                                     "--checkpoint-dir", str(tmp_path / "none")]))
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("name", MODULES)
def test_unknown_dtype_is_refused_before_anything_runs(name, tmp_path, capsys):
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--dtype", "float8", "--data-dir", str(tmp_path / "none")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--dtype" in err and "invalid choice: 'float8'" in err and "bfloat16" in err
    assert not (tmp_path / "none").exists()


def _previous_run(folder):
    (folder / "1").mkdir(parents=True)
    (folder / "history.json").write_text("[]")


def test_overwrite_with_a_missing_data_dir_keeps_the_previous_run(tmp_path, capsys):
    module = importlib.import_module("experiments.cifar_simple_cnn")
    run = tmp_path / "run"
    _previous_run(run)
    with pytest.raises(SystemExit):
        cli.run(lambda: module.main(["--data-dir", str(tmp_path / "typo"), "--overwrite",
                                     "--checkpoint-dir", str(run)]))
    assert "does not exist" in capsys.readouterr().err
    assert (run / "history.json").is_file() and (run / "1").is_dir()


def test_overwrite_with_a_mistyped_model_keeps_the_previous_run(tiny_data, tmp_path, capsys,
                                                                monkeypatch):
    from jaxhw import pretrained
    monkeypatch.setattr(pretrained, "reachable", lambda url, **kw: False)
    module = importlib.import_module("experiments.bert_imdb")
    run = tmp_path / "run"
    _previous_run(run)
    with pytest.raises(SystemExit):
        cli.run(lambda: module.main(["--data-dir", str(tiny_data), "--model", "bert-base-uncsed",
                                     "--overwrite", "--checkpoint-dir", str(run)]))
    assert "bert-base-uncsed" in capsys.readouterr().err
    assert (run / "history.json").is_file() and (run / "1").is_dir()


@pytest.mark.parametrize("name, flag, value", [("bert_imdb", "--protocol", "handot"),
                                               ("bert_imdb", "--head", "pooler"),
                                               ("bert_imdb", "--truncation", "middle"),
                                               ("vit_fashion_mnist", "--optimizer", "sgd"),
                                               ("transformer_toy", "--task", "revrse"),
                                               ("transformer_toy", "--init", "pytorch"),
                                               ("cifar_inception", "--model", "resnet")])
def test_enumerated_flags_are_refused_by_the_parser(name, flag, value, tmp_path, capsys):
    module = importlib.import_module(f"experiments.{name}")
    run = tmp_path / "run"
    _previous_run(run)
    with pytest.raises(SystemExit) as exit_:
        module.main([flag, value, "--overwrite", "--checkpoint-dir", str(run)])
    assert exit_.value.code == 2
    assert f"invalid choice: '{value}'" in capsys.readouterr().err
    assert (run / "history.json").is_file()


@pytest.mark.parametrize("name", MODULES)
def test_every_experiment_speaks_one_flag_vocabulary(name, capsys):
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--lr", "--train-limit", "--test-limit", "--seed", "--data-dir"):
        assert flag in text, (name, flag)
    import dataclasses
    warmups = [f for f in dataclasses.fields(module.Config) if "warmup" in f.name]
    for field in warmups:  # one unit: a fraction of the run's steps
        assert field.name == "warmup" and "fraction of the steps" in field.metadata["help"]


def test_old_flag_spellings_still_work():
    from jaxhw import config
    simple = importlib.import_module("experiments.cifar_simple_cnn")
    assert config.parse(simple.Config, "", ["--learning-rate", "0.01"]).lr == 0.01
    toy = importlib.import_module("experiments.transformer_toy")
    cfg = config.parse(toy.Config, "", ["--train-size", "64", "--test-size", "8"])
    assert (cfg.train_limit, cfg.test_limit) == (64, 8)
    vit = importlib.import_module("experiments.vit_fashion_mnist")
    assert config.parse(vit.Config, "", ["--drop-rate", "0.2"]).dropout == 0.2


@pytest.mark.parametrize("name", MODULES)
def test_help_shows_every_default(name):
    from jaxhw import config
    module = importlib.import_module(f"experiments.{name}")
    parser = config.build_parser(module.Config, "", getattr(module, "PRESETS", None))
    for action in parser._actions:
        if action.dest not in ("help", "preset"):
            assert "default: " in action.help, (name, action.dest, action.help)


def test_a_run_folder_conflict_is_reported_before_any_data_is_loaded(tmp_path, capsys):
    module = importlib.import_module("experiments.cifar_simple_cnn")
    run = tmp_path / "run"
    _previous_run(run)
    with pytest.raises(SystemExit):  # the data folder does not exist either
        cli.run(lambda: module.main(["--data-dir", str(tmp_path / "typo"),
                                     "--checkpoint-dir", str(run)]))
    err = capsys.readouterr().err
    assert "already holds checkpoints" in err and "--overwrite" in err
    assert (run / "history.json").is_file()


TOY = ["--task", "reverse", "--train-limit", "128", "--test-limit", "16", "--dim", "16",
       "--ffn-dim", "32", "--seq-len", "5", "--layer-num", "1", "--batch-size", "32"]


@pytest.mark.slow
def test_transformer_tasks_run_through_the_shared_runner(tmp_path, capsys):
    """--seeds, --evaluate and --resume work for the sequence tasks as for the others."""
    import json
    module = importlib.import_module("experiments.transformer_toy")
    out = tmp_path / "run"
    seeds = module.run(config.parse(
        module.Config, "", TOY + ["--epochs", "1", "--seeds", "2", "--checkpoint-dir", str(out)]))
    assert seeds["metric"] == "exact_sequence_accuracy" and len(seeds["seeds"]) == 2
    for s in (0, 1):
        one = json.loads((out / f"seed_{s}" / "results.json").read_text())
        assert one["exact_sequence_accuracy"] == seeds["seeds"][s]["accuracy"]
        assert {"attention.png", "history.png"} <= {p.name for p in (out / f"seed_{s}").iterdir()}
    assert seeds["seeds"][1]["compile_s"] < seeds["seeds"][0]["compile_s"]
    capsys.readouterr()
    cli.run(lambda: module.main(TOY + ["--evaluate", "--checkpoint-dir", str(out / "seed_0")]))
    assert "evaluating" in capsys.readouterr().out
    resumed = module.run(config.parse(
        module.Config, "", TOY + ["--epochs", "2", "--resume", "--checkpoint-dir",
                                  str(out / "seed_1")]))
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]


@pytest.mark.slow
def test_transformer_data_dir_is_written_then_read(tmp_path, capsys):
    module = importlib.import_module("experiments.transformer_toy")
    args = TOY + ["--epochs", "1", "--data-dir", str(tmp_path / "data"), "--overwrite",
                  "--checkpoint-dir", str(tmp_path / "run")]
    first = module.run(config.parse(module.Config, "", args))
    assert "written to" in capsys.readouterr().out
    again = module.run(config.parse(module.Config, "", args))
    assert "read from" in capsys.readouterr().out
    assert again["history"][0]["train_loss"] == first["history"][0]["train_loss"]


def test_random_demo_refuses_the_sequence_task_flags(capsys):
    module = importlib.import_module("experiments.transformer_toy")
    with pytest.raises(SystemExit):
        cli.run(lambda: module.main(["--seeds", "2", "--resume"]))
    err = capsys.readouterr().err
    assert "--seeds: only for the sequence tasks" in err


def test_the_random_demo_resumed_shows_its_logged_losses(tmp_path, capsys):
    from experiments import transformer_toy
    args = ["--preset", "small", "--dim", "16", "--ffn-dim", "32", "--vocab", "50",
            "--seq-len", "8", "--batch-size", "4", "--steps", "3", "--compile-cache", "off",
            "--checkpoint-dir", str(tmp_path / "demo")]
    with pytest.raises(SystemExit):  # nothing logged yet
        cli.run(lambda: transformer_toy.main(args + ["--resume"]))
    assert "no finished demo with these settings" in capsys.readouterr().err
    transformer_toy.main(args + ["--resume", "auto"])  # none logged: it trains
    trained = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("Epoch: ")]
    transformer_toy.main(args + ["--resume", "auto"])
    shown = capsys.readouterr().out
    assert [line for line in shown.splitlines() if line.startswith("Epoch: ")] == trained
    assert "the finished demo in" in shown and len(trained) == 3
    transformer_toy.main(args + ["--resume", "auto", "--steps", "4"])  # other settings: trains
    assert "the finished demo in" not in capsys.readouterr().out
