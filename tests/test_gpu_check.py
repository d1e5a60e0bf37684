"""``python -m benchmarks.gpu_check --smoke``: every row of the GPU check runs on a CPU."""

import json

import pytest

from benchmarks import gpu_check


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_row(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    rows = gpu_check.main(["--smoke", "--out", str(out), "--bert-autotune", "0"])
    written = json.loads(out.read_text())
    assert written["smoke"] and written["rows"] == json.loads(json.dumps(rows))
    names = [r["experiment"] for r in rows]
    assert names == ["cifar_betternet_gpu_preset", "cifar_betternet_cpu_preset",
                     "vit_fashion_mnist", "transformer_reverse", "transformer_demo_torch_init",
                     "bert_imdb_minilm", "bert_base_shaped_random_autotune0"]
    for row in rows:
        assert "error" not in row, row
        assert set(gpu_check.COLUMNS) <= set(row)
        assert row["compile_s"] > 0 and row["step_ms"] > 0 and row["throughput"] > 0
        assert row["dtype"] == "float32" and "cpu" in row["device"]
    # a step's examples are the run's batch: 64 for the smoke run's image rows, 16 for BERT
    assert [r["examples_per_step"] for r in rows if "examples_per_step" in r] == [
        64, 64, 64, 64, 16, 8]
    accuracies = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    assert len(accuracies) == 5 and all(0 <= a <= 1 for a in accuracies)
    table = capsys.readouterr().out
    assert "experiment" in table and "bert_base_shaped_random_autotune0" in table


def test_gpu_check_needs_data_unless_smoke(capsys):
    import pytest
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "--data-dir is required" in capsys.readouterr().err


def test_a_row_counts_the_batch_its_run_trained():
    """The gpu preset trains batches of 1024: its row's throughput counts 1024 images per
    step, read from the run's saved config, not a number written into the check."""
    from experiments import cifar_inception
    from jaxhw import config
    gpu = config.parse(cifar_inception.Config, "", ["--preset", "gpu"], cifar_inception.PRESETS)
    results = {"config": {"batch_size": gpu.batch_size}, "history": [{"step": 100,
               "train_time_s": 1.0}], "train_s": 2.0, "device": "x", "dtype": "bfloat16",
               "compile_s": 1.0, "test_accuracy": 0.9}
    row = gpu_check.from_results(results, "images/s", "test_accuracy")
    assert gpu.batch_size == 1024 and row["examples_per_step"] == 1024
    assert row["throughput"] == 1024 / 0.02


@pytest.mark.slow
def test_the_bert_row_scales_the_loss_in_float16_as_the_run_does():
    """bert_imdb trains float16 with dynamic loss scaling (a T4); the bert-base-shaped row
    times that step, and a float32 one without it."""
    from transformers import BertConfig
    tiny = BertConfig(vocab_size=1100, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32)
    rows = {d: gpu_check.bert_throughput(tiny, batch=4, length=8, steps=2, dtype=d,
                                         autotune=None) for d in ("float16", "float32")}
    assert rows["float16"]["loss_scaling"] and rows["float16"]["dtype"] == "float16"
    assert not rows["float32"]["loss_scaling"]
