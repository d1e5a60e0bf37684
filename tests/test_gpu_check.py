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
    accuracies = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    assert len(accuracies) == 5 and all(0 <= a <= 1 for a in accuracies)
    table = capsys.readouterr().out
    assert "experiment" in table and "bert_base_shaped_random_autotune0" in table


def test_gpu_check_needs_data_unless_smoke(capsys):
    import pytest
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "--data-dir is required" in capsys.readouterr().err
