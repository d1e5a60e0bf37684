"""The BERT notebook's default settings fit a free Colab T4: XLA's memory analysis of the
compiled train block (bert-base-shaped, random weights, float16 as --dtype auto picks on
compute capability 7.5) stays under 0.75 x 15 GiB - 1 GiB."""

from benchmarks import memory_check


def test_bert_notebook_defaults_fit_a_t4_with_margin(tmp_path):
    args = memory_check.notebook_args()
    assert "bert-base-uncased" in args and "--dtype" not in args  # the notebook picks none
    row = memory_check.main(["--out", str(tmp_path / "memory.json")])
    assert row["args"] == args and row["target"] == "t4" and row["dtype"] == "float16"
    assert memory_check.T4_BUDGET_GIB == 0.75 * 15 - 1 == row["limit_gib"]
    assert row["arguments_bytes"] > 110e6 * 4 * 3  # parameters + AdamW's two moments, float32
    assert row["aliased_bytes"] > 0                  # the donated state is written in place
    assert 0 < row["peak_gib"] < 0.75 * 15 - 1, row
