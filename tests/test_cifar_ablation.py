"""The ablation benchmark runs its rows and writes its table (tiny sizes, CPU)."""

import json

from benchmarks import cifar_ablation
from tests.conftest import write_image_split


def test_ablation_rows_run_and_are_written(tmp_path):
    data = tmp_path / "data"
    write_image_split(data, "cifar10", "train", 256, (32, 32, 3), seed=1)
    write_image_split(data, "cifar10", "test", 64, (32, 32, 3), seed=2)
    out = tmp_path / "ablation.json"
    rows = cifar_ablation.main([
        "--data-dir", str(data), "--seeds", "2", "--rows", "full,no_lookahead",
        "--extra", "--widths 16,16,16 --batch-size 64 --epochs 1", "--out", str(out)])
    assert [r["row"] for r in rows] == ["full", "no_lookahead"]
    assert all("error" not in r and r["seeds"] == 2 for r in rows)
    saved = json.loads(out.read_text())
    assert saved["rows"] == rows
    md = out.with_suffix(".md").read_text()
    assert "| no_lookahead | no lookahead weight averaging |" in md
