"""Every experiment's command line: --help explains every flag; bad setups fail clearly."""

import importlib
import pkgutil
import time

import pytest

import experiments
from jaxhw import cli
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
        module.main(["--dtype", "float16", "--data-dir", str(tmp_path / "none")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--dtype" in err and "invalid choice: 'float16'" in err and "bfloat16" in err
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
    from jaxhw.models import bert
    monkeypatch.setattr(bert, "reachable", lambda url, **kw: False)
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
    for flag in ("--lr", "--train-limit", "--test-limit", "--seed"):
        assert flag in text, (name, flag)
    if name != "transformer_toy":  # it generates its data
        assert "--data-dir" in text


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
            assert "(default" in action.help, (name, action.dest, action.help)
