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
    monkeypatch.setattr(sources, "_reachable", lambda url, **kw: False)
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
