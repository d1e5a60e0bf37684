"""How many programs a run compiles: one per train block length and bucket shape, and one
evaluation program per bucket length that every split shares."""

from __future__ import annotations

import gzip
import json

import pytest

from experiments import cifar_inception
from tests.conftest import WORDS, write_image_split


def _reviews(root, split, n):
    """Reviews of 3 or 11 words, so that 2 buckets at 16 tokens both fill."""
    folder = root / "imdb"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(n):
            words = [WORDS[(i + k) % len(WORDS)] for k in range(3 if i % 3 else 11)]
            f.write(json.dumps({"text": " ".join(words), "label": i % 2}) + "\n")


@pytest.mark.slow
def test_a_bert_run_compiles_a_pinned_number_of_programs(tmp_path, tiny_model_dir, monkeypatch):
    from experiments import bert_imdb
    monkeypatch.setenv("JAXHW_CACHE_DIR", str(tmp_path / "cache"))
    for split in ("train", "test"):
        _reviews(tmp_path / "data", split, 200)
    results = bert_imdb.run(bert_imdb.Config(
        model=str(tiny_model_dir), data_dir=str(tmp_path / "data"), max_len=16, buckets=2,
        batch_size=8, epochs=2, checkpoint_dir=str(tmp_path / "run"), compile_cache="off"))
    names = sorted(p["program"] for p in results["program_list"])
    evals = [p for p in results["program_list"] if p["program"] == "eval"]
    # 240 training reviews (the handout split's 60 %): 163 short (bucket 8) = 20 batches,
    # 77 long (bucket 16) = 9. Auto blocks: 3 steps. Each bucket's calls share one length
    # (20 batches: 7 calls of 3, one slot masked; 9: 3 calls of 3), so one train program
    # per bucket length, and one eval program per bucket length that the validation and
    # test splits (80 reviews each) share: 4 in all.
    assert results["steps_per_call"] == 3
    assert names == ["eval", "eval", "train x3", "train x3"], names
    assert results["programs"] == 4
    assert len({p["shapes"] for p in evals}) == 2
    # Validation ran after each of the 2 epochs and the test at the end: no new program.
    assert len(results["history"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name,values,want", [
    # Six views at the end, two (image and mirror) after every epoch.
    ("cpu", {}, ["eval", "eval tta=1", "train x1"]),
    ("gpu", cifar_inception.PRESETS["gpu"], ["eval", "train x1"]),
    # Plain images after every epoch, six views at the end: an eval program for each.
    ("epoch-tta", {"tta": "six", "epoch_tta": "none"},
     ["eval", "eval tta=0", "train x1"]),
])
def test_the_cifar_runs_compile_a_pinned_number_of_programs(name, values, want, tmp_path):
    for split, n in (("train", 96), ("test", 40)):
        write_image_split(tmp_path / "data", "cifar10", split, n, (32, 32, 3), seed=len(split))
    values = {**values, "widths": "16,16,16", "stem": 8,
              "batch_size": 16, "epochs": 1, "data_dir": str(tmp_path / "data"),
              "checkpoint_dir": str(tmp_path / name), "compile_cache": "off"}
    results = cifar_inception.run(cifar_inception.Config(**values))
    # One train program (one step per call on a CPU: convolutions) and one eval program
    # per number of test-time views.
    assert sorted(p["program"] for p in results["program_list"]) == want
