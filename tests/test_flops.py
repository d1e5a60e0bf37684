"""``python -m benchmarks.flops``: XLA's count of each preset's forward pass per example."""

import json

import pytest

from benchmarks import flops


@pytest.mark.slow
def test_flops_rows_and_the_airbench_reference(tmp_path):
    out = tmp_path / "flops.json"
    rows = flops.main(["--only", "cifar_simple_cnn,cifar_inception", "--out", str(out)])
    assert json.loads(out.read_text()) == rows
    by = {(r["experiment"], r["preset"]): r["gflop_per_example"] for r in rows}
    reference = by[("airbench94_reference", None)]
    # airbench94's convolutions: 0.118 G multiply-adds, 0.237 GFLOP counted by hand; XLA's
    # count of the compiled program is close to it
    assert 0.18 < reference < 0.26
    # SimpleCNN: 2 x (26*26*8*7*7*3 + 10*10*16*4*4*8 + 400*100 + 100*80 + 80*10) = 0.0021 G
    assert by[("cifar_simple_cnn", "default")] == pytest.approx(0.0021, rel=0.1)
    assert by[("cifar_inception", "cpu")] < by[("cifar_inception", "gpu")]
    assert by[("cifar_inception", "gpu")] <= 1.03 * reference  # airbench94's work or less


def test_an_unknown_experiment_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        flops.main(["--only", "cifar_bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cifar_bogus" in err and "cifar_inception" in err
