"""The BERT notebook's default settings fit a free Colab GPU: XLA's memory analysis of the
compiled train step (bert-base-shaped, random weights) stays under 12 GiB."""

from benchmarks import memory_check


def test_bert_notebook_defaults_fit_under_12_gib(tmp_path):
    args = memory_check.notebook_args()
    assert "bert-base-uncased" in args and "bfloat16" in args
    row = memory_check.main(["--out", str(tmp_path / "memory.json")])
    assert row["args"] == args and row["dtype"] == "bfloat16"
    assert row["arguments_bytes"] > 110e6 * 4 * 3  # parameters + AdamW's two moments, float32
    assert row["aliased_bytes"] > 0                  # the donated state is written in place
    assert 0 < row["peak_gib"] < 12.0, row
