"""The BERT notebook's default settings fit a free Colab T4: XLA's memory analysis of the
compiled train block (bert-base-shaped, random weights, float16 as --dtype auto picks on
compute capability 7.5) stays under 0.75 x 15 GiB - 1 GiB."""

import pytest

from benchmarks import memory_check


@pytest.mark.slow
def test_bert_notebook_defaults_fit_a_t4_with_margin(tmp_path):
    args = memory_check.notebook_args()
    assert "bert-base-uncased" in args and "--dtype" not in args  # the notebook picks none
    row = memory_check.main(["--out", str(tmp_path / "memory.json")])
    assert row["args"] == args and row["target"] == "t4" and row["dtype"] == "float16"
    assert memory_check.T4_BUDGET_GIB == 0.75 * 15 - 1 == row["limit_gib"]
    assert row["arguments_bytes"] > 110e6 * 4 * 3  # parameters + AdamW's two moments, float32
    assert row["aliased_bytes"] > 0                  # the donated state is written in place
    assert 0 < row["peak_gib"] < 0.75 * 15 - 1, row


def test_the_analysis_options_leave_the_memory_analysis_unchanged():
    """memory_check compiles at LLVM level 0 (faster): the buffer assignment is the same."""
    import jax
    import jax.numpy as jnp

    from jaxhw.train.xla_options import analysis_options

    def step(w, x):  # a donated parameter, a temporary and an output
        g = jax.grad(lambda w: jnp.tanh(x @ w).sum())(w)
        return w - 0.1 * g, jnp.tanh(x @ w).mean()

    args = (jnp.ones((256, 512)), jnp.ones((64, 256)))
    lowered = jax.jit(step, donate_argnums=0).lower(*args)
    options = analysis_options("cpu")
    assert options == {"xla_backend_optimization_level": "0"}
    assert analysis_options("gpu") is None

    def analysis(compiled):
        m = compiled.memory_analysis()
        return (m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
                m.temp_size_in_bytes)

    assert analysis(lowered.compile(options)) == analysis(lowered.compile())
