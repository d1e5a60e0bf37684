"""The test-time views benchmark scores its sets from the same logits the engine averages."""

import json

import jax
import numpy as np
import pytest

import jaxhw
from benchmarks import cifar_tta_views
from experiments import cifar_inception
from jaxhw.config import ConfigError
from jaxhw.train.steps import eval_logits
from tests.conftest import write_image_split

TINY = "--widths 16,16,16 --batch-size 32 --epochs 1"


@pytest.mark.slow
def test_sets_match_the_engines_test_time_levels(tmp_path):
    data = tmp_path / "data"
    write_image_split(data, "cifar10", "train", 64, (32, 32, 3), seed=1)
    write_image_split(data, "cifar10", "test", 24, (32, 32, 3), seed=2)
    run = tmp_path / "run"
    cifar_inception.main(["--data-dir", str(data), *TINY.split(), "--checkpoint-dir", str(run)])
    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    logits = cifar_tta_views.view_logits(run, images, batch_size=4)
    assert len(logits) == 50
    # level L of the engine (what the run's evaluation and jaxhw.load use) is one set here
    predictor = jaxhw.load(run)
    inf = predictor.inference
    x = inf.preprocess(jax.random.key(0), images, False)
    for level, name in ((0, "image"), (1, "mirror"), (2, "airbench_6"), (3, "grid_2px_50")):
        want = np.asarray(eval_logits(inf.model, predictor.variables, x, level))
        np.testing.assert_allclose(cifar_tta_views.set_logits(logits, name), want,
                                   rtol=1e-4, atol=1e-4, err_msg=name)
    # views differ, so the sets are not all the same average
    assert not np.allclose(logits[(0, 0, False)], logits[(2, -2, True)], atol=1e-4)

    out = tmp_path / "views.json"
    result = cifar_tta_views.main(["--runs", f"{run},{run}", "--data-dir", str(data),
                                   "--limit", "16", "--out", str(out)])
    assert result["test_images"] == 16 and result["scores"][0] == result["scores"][1]
    assert json.loads(out.read_text())["scores"] == result["scores"]
    md = out.with_suffix(".md").read_text()
    assert "| `grid_2px_50`: all 25 shifts" in md and "host CPU" in md


def test_missing_run_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cifar_tta_views.Config(runs=str(tmp_path / "nope"), data_dir="x")
