"""The ablation benchmark runs its rows and writes its table (tiny sizes, CPU)."""

import json

import pytest

from benchmarks import cifar_ablation
from experiments import cifar_inception
from jaxhw.config import ConfigError
from jaxhw.train.checkpoint import Checkpoints
from tests.conftest import write_image_split

TINY = "--widths 16,16,16 --batch-size 64 --epochs 1 --stem 8"


@pytest.fixture
def data(tmp_path):
    data = tmp_path / "data"
    write_image_split(data, "cifar10", "train", 256, (32, 32, 3), seed=1)
    write_image_split(data, "cifar10", "test", 64, (32, 32, 3), seed=2)
    return data


@pytest.mark.slow
def test_ablation_rows_run_and_are_written(tmp_path, data):
    out = tmp_path / "ablation.json"
    rows = cifar_ablation.main([
        "--data-dir", str(data), "--seeds", "2", "--rows", "full,no_lookahead",
        "--extra", TINY, "--out", str(out)])
    assert [r["row"] for r in rows] == ["full", "no_lookahead"]
    assert all("error" not in r and r["seeds"] == 2 for r in rows)
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows and saved["preset"] == "gpu"
    md = out.with_suffix(".md").read_text()
    assert "| no_lookahead | no lookahead weight averaging |" in md
    assert "host CPU" in md


@pytest.mark.slow
def test_cpu_ablation_reuses_a_run_and_evaluates_without_training(tmp_path, data, capsys):
    # A run of the cpu preset made by the experiment itself becomes the full row.
    run = tmp_path / "run"
    cifar_inception.main(["--data-dir", str(data), *TINY.split(), "--checkpoint-dir", str(run)])
    out, work = tmp_path / "cpu.json", tmp_path / "work"
    argv = ["--preset", "cpu", "--data-dir", str(data), "--seeds", "1", "--rows",
            "full,tta_mirror_only,no_tta", "--extra", TINY, "--out", str(out),
            "--work", str(work), "--full-run", str(run)]
    rows = cifar_ablation.main(argv)
    full, mirror, none = rows
    assert all("error" not in r for r in rows), rows
    saved = json.loads((run / "results.json").read_text())
    assert full["mean_accuracy"] == saved["test_accuracy"]
    assert full["mean_train_s"] == saved["train_s"]
    # evaluation-only rows: the full row's training time, their own (cheaper) evaluation
    assert mirror["eval_only"] and mirror["mean_train_s"] == full["mean_train_s"]
    evaluated = {name: json.loads((work / name / "results.json").read_text())["config"]
                 for name in ("tta_mirror_only", "no_tta")}
    assert evaluated["tta_mirror_only"]["tta"] == "mirror"
    assert evaluated["no_tta"]["tta"] == "none"
    assert all(r["final_eval_s"] > 0 for r in rows)
    assert json.loads(out.read_text())["host_cpu_flags"] is not None
    # the full row's folder is untouched by the evaluation-only rows
    assert json.loads((work / "full" / "results.json").read_text())["test_accuracy"] == \
        saved["test_accuracy"]
    # a second call keeps every finished row
    capsys.readouterr()
    assert cifar_ablation.main(argv[:-2]) == rows
    assert capsys.readouterr().out.count("kept from") == 3


def test_full_run_must_match_the_row(tmp_path, data):
    run = tmp_path / "run"
    cifar_inception.main(["--data-dir", str(data), *TINY.split(), "--label-smoothing", "0.2",
                          "--checkpoint-dir", str(run)])
    with pytest.raises(ConfigError, match="label_smoothing differ"):
        cifar_ablation.main(["--preset", "cpu", "--data-dir", str(data), "--seeds", "1",
                             "--rows", "full", "--extra", TINY, "--work", str(tmp_path / "w"),
                             "--full-run", str(run), "--out", str(tmp_path / "o.json")])


@pytest.mark.slow
def test_full_run_may_be_one_seed_of_a_several_seed_run(tmp_path, data):
    """With --seeds 1, seed_0 of a --seeds 2 run is the full row (not seed_1: another
    seed), and the evaluation-only rows evaluate its last epoch, the weights its final
    evaluation used, whichever epoch was best."""
    run, work = tmp_path / "run", tmp_path / "work"
    cifar_inception.main(["--data-dir", str(data), *TINY.split(), "--epochs", "2",
                          "--seeds", "2", "--checkpoint-dir", str(run)])
    assert Checkpoints(run / "seed_0").epochs() == [1, 2]
    argv = ["--preset", "cpu", "--data-dir", str(data), "--seeds", "1", "--rows",
            "full,no_tta", "--extra", TINY + " --epochs 2", "--work", str(work),
            "--out", str(tmp_path / "cpu.json"), "--full-run"]
    with pytest.raises(ConfigError, match="seed differ"):
        cifar_ablation.main([*argv, str(run / "seed_1")])
    full, no_tta = cifar_ablation.main([*argv, str(run / "seed_0")])
    saved = json.loads((run / "seed_0" / "results.json").read_text())
    assert full["mean_accuracy"] == saved["test_accuracy"] and "error" not in no_tta
    assert no_tta["mean_train_s"] == saved["train_s"]
    evaluated = json.loads((work / "no_tta" / "results.json").read_text())
    assert evaluated["epochs"] == 2  # --evaluate restored the last epoch of the copied run
    assert Checkpoints(work / "full").epochs() == [1, 2]  # the adopted run is kept whole


def _values(preset: str, row: str) -> dict:
    """cifar_inception's Config fields for ``row`` of ``preset``'s ablation."""
    args = cifar_ablation.Config(data_dir="x", preset=preset, seeds=1, compile_cache="off")
    return cifar_ablation._row_values(cifar_ablation.row_argv(row, args))


def _changed(preset: str, row: str) -> dict:
    """The fields ``row`` of ``preset``'s ablation sets otherwise than its full row."""
    full = _values(preset, "full")
    return {k: v for k, v in _values(preset, row).items() if full.get(k) != v}


def test_wide_stages_row_changes_width_epochs_and_smoothing_only():
    """The cpu preset's wide_stages row trains wider stages for 12 epochs with label
    smoothing 0.1, and evaluates with the preset's test-time views."""
    assert _changed("cpu", "wide_stages") == {"widths": "64,128,256", "epochs": 12,
                                              "label_smoothing": 0.1}
    assert set(cifar_ablation.OUT) == {"cpu", "gpu"}


def test_rows_must_belong_to_the_preset():
    with pytest.raises(ConfigError, match="not rows of --preset cpu"):
        cifar_ablation.Config(data_dir="x", preset="cpu", rows="full,relu")
    with pytest.raises(ConfigError, match="add full"):
        cifar_ablation.Config(data_dir="x", preset="cpu", rows="no_tta")


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(cifar_ablation.ROWS))
def test_every_training_row_parses_and_changes_the_full_row(preset):
    """A row's flags are valid cifar_inception flags and change what the full row trains
    (or, for an evaluation-only row, what it evaluates)."""
    for name in cifar_ablation.ROWS[preset]:
        if name == "full":
            continue
        changed = set(_changed(preset, name)) - {"evaluate", "overwrite"}
        assert changed, f"{preset} row {name} changes nothing"


def test_fast_bn_biases_row_is_the_gpu_presets_batch_norm_bias_training():
    gpu = cifar_inception.PRESETS["gpu"]
    assert _changed("cpu", "fast_bn_biases") == {"bn_scale": gpu["bn_scale"], "bn_bias_lr": gpu["bn_bias_lr"]}


def _row(name: str, accuracy: float) -> dict:
    """A finished row as run_row records it."""
    return {"row": name, "change": name, "flags": [], "eval_only": False,
            "mean_accuracy": accuracy, "std_accuracy": 0.0, "seeds": 1, "mean_train_s": 1.0,
            "final_eval_s": 1.0, "compile_s": 1.0, "device": "1 x cpu", "dtype": "float32"}


def test_rows_are_merged_in_the_presets_order():
    earlier = [_row("full", 0.90), _row("lookahead", 0.89), _row("gone", 0.5)]
    merged = cifar_ablation.merge_rows(earlier, [_row("no_tta", 0.88), _row("full", 0.91)],
                                       "cpu")
    assert [r["row"] for r in merged] == ["full", "no_tta", "lookahead", "gone"]
    assert merged[0]["mean_accuracy"] == 0.91  # the row run again replaces the earlier one


@pytest.mark.slow
def test_a_call_adds_its_rows_to_the_table_already_written(tmp_path, data):
    """Rows run in another call stay in --out, and so does the text above the table;
    rows of another setting are refused in one line before anything runs."""
    run, out = tmp_path / "run", tmp_path / "cpu.json"
    cifar_inception.main(["--data-dir", str(data), *TINY.split(), "--checkpoint-dir", str(run)])
    argv = ["--preset", "cpu", "--data-dir", str(data), "--seeds", "1", "--extra", TINY,
            "--out", str(out), "--work", str(tmp_path / "work"), "--full-run", str(run)]
    cifar_ablation.main([*argv, "--rows", "full"])
    saved = json.loads(out.read_text())
    saved["rows"].append(_row("lookahead", 0.5))  # a row run earlier, elsewhere
    out.write_text(json.dumps(saved))
    md = out.with_suffix(".md")
    md.write_text("How these rows were run.\n\n" + md.read_text())

    cifar_ablation.main([*argv, "--rows", "full,no_tta"])
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows] == ["full", "no_tta", "lookahead"]
    assert "error" not in rows[1] and rows[2]["mean_accuracy"] == 0.5
    text = md.read_text()
    assert text.startswith("How these rows were run.\n\nRows of --preset cpu;")
    assert "| no_tta |" in text and "| lookahead |" in text

    with pytest.raises(ConfigError, match=r"another setting: seeds 1 \(this call: 2\).*--fresh"):
        cifar_ablation.main([*argv[:4], "--seeds", "2", *argv[6:-2], "--rows", "full"])
    assert json.loads(out.read_text())["rows"] == rows  # refused: nothing written

    cifar_ablation.main([*argv, "--rows", "full", "--fresh"])
    assert [r["row"] for r in json.loads(out.read_text())["rows"]] == ["full"]
    assert md.read_text().startswith("Rows of --preset cpu;")


def test_an_out_file_that_is_not_a_table_is_one_line(tmp_path, data):
    out = tmp_path / "cpu.json"
    out.write_text("{broken")
    with pytest.raises(ConfigError, match="not an ablation table.*--fresh"):
        cifar_ablation.main(["--preset", "cpu", "--data-dir", str(data), "--seeds", "1",
                             "--rows", "full", "--out", str(out)])
