import numpy as np
import pytest

from jaxhw.data.toy import BOS, EOS, sequence_task


def test_reverse_task_rows():
    src, tgt = sequence_task("reverse", 50, vocab=10, min_len=2, max_len=6, seed=0)
    assert src.shape == (50, 6) and tgt.shape == (50, 8)
    for s, t in zip(src, tgt):
        n = int((s != 0).sum())
        assert (s[:n] >= 3).all() and (s[n:] == 0).all()
        assert t[0] == BOS and t[n + 1] == EOS and (t[n + 2:] == 0).all()
        np.testing.assert_array_equal(t[1:n + 1], s[:n][::-1])


def test_held_out_rows_are_disjoint_and_tasks_checked():
    train, _ = sequence_task("copy", 30, vocab=6, min_len=1, max_len=3, seed=0)
    test, _ = sequence_task("copy", 9, vocab=6, min_len=1, max_len=3, seed=1,
                            exclude={r.tobytes() for r in train})
    assert not {r.tobytes() for r in train} & {r.tobytes() for r in test}
    with pytest.raises(ValueError, match="only 39 exist"):  # 3 + 9 + 27 sequences
        sequence_task("copy", 10, vocab=6, min_len=1, max_len=3, seed=1,
                      exclude={r.tobytes() for r in train})
    with pytest.raises(ValueError, match="unknown task"):
        sequence_task("shuffle", 1, 10, 1, 2, 0)
