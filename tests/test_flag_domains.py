"""Every flag of every entry point declares its valid values, and a value outside them is
one line from argparse (exit code 2) before any data is read; the Python API refuses the
same values with the same message."""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from jaxhw import config
from jaxhw.config import ConfigError, Domain, Items

ENTRY_POINTS = ["experiments.cifar_simple_cnn", "experiments.cifar_inception",
                "experiments.vit_fashion_mnist", "experiments.bert_imdb",
                "experiments.transformer_toy", "experiments.vit_sweep",
                "benchmarks.gpu_check", "benchmarks.cifar_ablation", "benchmarks.memory_check"]


def _outside(domain: Domain) -> list[str]:
    """Values just outside ``domain`` (and NaN / infinities for floats), as typed."""
    step = 1 if domain.integer else 1e-6
    bad = []
    if domain.ge is not None:
        bad.append(domain.ge - step * (1 if domain.integer else max(1, abs(domain.ge))))
    if domain.gt is not None:
        bad.append(domain.gt)
    if domain.le is not None:
        bad.append(domain.le + step * (1 if domain.integer else max(1, abs(domain.le))))
    if domain.lt is not None:
        bad.append(domain.lt)
    texts = [str(int(v)) if domain.integer else repr(float(v)) for v in bad]
    texts += ["1.5"] if domain.integer else ["nan", "inf", "-inf"]
    return texts + ["abc"]


def _bad_values(domain: Domain | Items) -> list[str]:
    if isinstance(domain, Domain):
        return _outside(domain)
    if domain.names:
        return [f"{domain.names[0]},nope"]
    return [v for v in _outside(domain.domain) if v != "abc"] + ["1,x"]


def _numeric_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = config._arg_type(hints[f.name])
        if kind in (int, float) or f.metadata.get("items") is not None:
            yield f


def _cases(name: str) -> list[tuple[str, str, str]]:
    cls = importlib.import_module(name).Config
    return [(config.flag_name(f), value, config.describe(cls, f))
            for f in _numeric_fields(cls) for value in _bad_values(config.domain_of(cls, f))]


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No data directory, no network, and any attempt to read a dataset fails the test."""
    from jaxhw.data import sources

    def refuse(*args, **kwargs):
        raise AssertionError("a dataset was read before the flags were checked")

    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setattr(sources, "load_split", refuse)
    monkeypatch.setattr(sources, "reachable", lambda url, **kw: False)
    monkeypatch.chdir(tmp_path)  # anything a run would write lands here
    return tmp_path


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_numeric_flag_declares_its_domain(name):
    cls = importlib.import_module(name).Config
    for f in _numeric_fields(cls):
        domain = config.domain_of(cls, f)
        if isinstance(domain, Domain):
            assert any(v is not None for v in (domain.ge, domain.gt, domain.le, domain.lt)), \
                f"{name} {config.flag_name(f)} has no range"
        text = config.build_parser(cls, "").format_help()
        squeeze = lambda t: "".join(t.split())  # noqa: E731 (argparse wraps at hyphens)
        assert squeeze(config.describe(cls, f)) in squeeze(text), config.flag_name(f)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_a_value_outside_a_domain_is_one_line_and_exit_2(name, no_data, capsys):
    module = importlib.import_module(name)
    cases = _cases(name)
    assert cases
    for flag, value, valid in cases:
        start = time.perf_counter()
        with pytest.raises(SystemExit) as exit_:
            module.main([f"{flag}={value}"])
        took = time.perf_counter() - start
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert exit_.value.code == 2, (flag, value, err)
        assert "\n" not in err and "Traceback" not in err, (flag, value, err)
        assert flag in err and valid in err, (flag, value, err)
        assert value in err or repr(float(value)) in err, (flag, value, err)
        assert took < 3, (flag, value, took)
    assert list(no_data.iterdir()) == []  # nothing written, no folder made
    print(f"{name}: {len(cases)} bad values refused")


def test_the_walker_tries_many_values():
    count = sum(len(_cases(name)) for name in ENTRY_POINTS)
    assert count > 300, count


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_the_python_api_gives_the_same_message(name, capsys):
    module = importlib.import_module(name)
    for flag, value, _ in _cases(name):
        try:
            number = float(value)
        except ValueError:
            continue  # not a number: only the command line sees such text
        field = flag[2:].replace("-", "_")
        kind = config._arg_type(typing.get_type_hints(module.Config)[field])
        if kind is int and not number.is_integer():
            continue
        typed = value if kind is str else int(number) if kind is int else number  # str: a list
        with pytest.raises(ConfigError) as error:
            module.Config(**{field: typed})
        with pytest.raises(SystemExit):
            module.main([f"{flag}={value}"])
        assert f"error: {error.value} (see --help)" in capsys.readouterr().err


@pytest.mark.parametrize("name, argv, expected", [
    ("experiments.vit_fashion_mnist", ["--embed-dim", "100", "--num-heads", "8"],
     "--embed-dim 100 is not divisible by --num-heads 8"),
    ("experiments.vit_fashion_mnist", ["--patch-size", "5"], "does not divide the image size"),
    ("experiments.vit_fashion_mnist", ["--embed-dim", "4", "--num-heads", "4",
                                       "--mlp-ratio", "0.1"], "leaves the MLP no hidden unit"),
    ("experiments.bert_imdb", ["--max-len", "64", "--buckets", "9"], "--buckets must lie in [1, 8]"),
    ("experiments.bert_imdb", ["--batch-size", "40000"], "exceeds the 30,000 training examples"),
    ("experiments.cifar_inception", ["--train-limit", "100"], "--batch-size 128 exceeds the 100"),
    ("experiments.cifar_inception", ["--widths", "24,32,32"], "must be a multiple of 16"),
    ("experiments.cifar_inception", ["--widths", "16,32", "--blocks", "0,1,1"],
     "the same number of stages"),
    ("experiments.cifar_simple_cnn", ["--batch-size", "60000"], "exceeds the 50,000"),
    ("experiments.cifar_simple_cnn", ["--evaluate", "--resume"], "--evaluate excludes"),
    ("experiments.transformer_toy", ["--dim", "100", "--head-num", "3"], "divisible by --head-num"),
    ("experiments.transformer_toy", ["--task", "reverse", "--min-len", "20"],
     "--min-len 20 exceeds --seq-len 16"),
    ("experiments.transformer_toy", ["--task", "reverse", "--vocab", "4", "--seq-len", "3"],
     "only 2 exist"),
    ("experiments.transformer_toy", ["--task", "reverse", "--train-limit", "10"],
     "--batch-size 64 exceeds the 10 training sequences"),
    ("experiments.transformer_toy", ["--seeds", "2"], "only for the sequence tasks"),
    ("experiments.vit_sweep", ["--only", "base,nope"], "each one of base, patch4"),
    ("benchmarks.gpu_check", [], "--data-dir is required (or --smoke)"),
    ("benchmarks.cifar_ablation", ["--data-dir", "x", "--extra=--lr=-1"],
     "row full with --extra '--lr=-1': --lr must be a finite number > 0"),
    ("benchmarks.cifar_ablation", ["--data-dir", "x", "--extra=--bogus 1"],
     "unrecognized arguments: --bogus 1"),
])
def test_rules_between_flags_are_one_line_before_any_data(name, argv, expected, no_data,
                                                          capsys):
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(name).main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err, err
    assert expected in err, err
    assert list(no_data.iterdir()) == []


def test_a_config_changed_after_it_was_built_is_checked_again(no_data):
    from experiments import cifar_inception
    cfg = cifar_inception.Config(train_limit=256, batch_size=32)
    cfg.lr = -1.0
    with pytest.raises(ConfigError, match="--lr must be a finite number > 0, got -1.0"):
        cifar_inception.run(cfg)


def test_presets_hold_valid_values():
    for name in ENTRY_POINTS:
        module = importlib.import_module(name)
        for preset, values in getattr(module, "PRESETS", {}).items():
            module.Config(**values)  # raises ConfigError if a preset left its domains


@pytest.mark.parametrize("argv, expected", [
    (["experiments.cifar_inception", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["experiments.vit_fashion_mnist", "--preset", "fast", "--depth", "0"],
     "--depth must be an integer >= 1, got 0"),
    (["experiments.cifar_simple_cnn", "--print-every", "0"],
     "--print-every must be an integer >= 1, got 0"),
])
def test_the_command_line_prints_one_line(argv, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAXHW_DATA_DIR"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"python -m {argv[0]}: error: {expected} (see --help)")
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def test_domains_describe_themselves():
    assert Domain(ge=0, lt=1).describe() == "a finite number in [0, 1)"
    assert Domain(gt=0).describe() == "a finite number > 0"
    assert Domain(ge=1, integer=True).describe() == "an integer >= 1"
    assert Domain(ge=-1, le=4, integer=True).describe() == "an integer in [-1, 4]"
    assert not Domain(gt=0).admits(math.nan) and not Domain(gt=0).admits(math.inf)
    assert not Domain(ge=0, integer=True).admits(True)  # a switch is not a number
    assert Items(Domain(ge=1, integer=True)).parse("64, 128,256") == [64, 128, 256]
    with pytest.raises(ValueError):
        Items(Domain(ge=1, integer=True)).parse("64,0")
