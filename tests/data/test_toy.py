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


SETTINGS = {"task": "reverse", "train": 20, "test": 5, "vocab": 10, "min_len": 2,
            "max_len": 6, "seed": 0}


def test_generated_splits_round_trip_and_must_match_their_settings(tmp_path):
    from jaxhw.data import DataError
    from jaxhw.data.toy import load_task_splits, save_task_splits, task_splits
    train, test = task_splits("reverse", 20, 5, 10, 2, 6, 0)
    assert not {r.tobytes() for r in train[0]} & {r.tobytes() for r in test[0]}
    assert load_task_splits(tmp_path / "none", SETTINGS) is None
    save_task_splits(tmp_path, train, test, SETTINGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generated.json", "test.npz",
                                                           "train.npz"]
    (train2, test2) = load_task_splits(tmp_path, SETTINGS)
    for a, b in zip((*train, *test), (*train2, *test2)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match=r"other settings.*'train': \(20, 40\)"):
        load_task_splits(tmp_path, {**SETTINGS, "train": 40})


def test_own_sequences_are_padded_and_checked(tmp_path):
    from jaxhw.data import DataError
    from jaxhw.data.toy import load_task_splits
    src = np.array([[3, 4], [5, 0]])
    tgt = np.array([[BOS, 4, 3, EOS], [BOS, 5, EOS, 0]])
    np.savez(tmp_path / "train.npz", src=src, tgt=tgt)
    with pytest.raises(DataError, match="needs both train.npz and test.npz"):
        load_task_splits(tmp_path, SETTINGS)
    np.savez(tmp_path / "test.npz", src=src, tgt=tgt)
    (s, t), _ = load_task_splits(tmp_path, {**SETTINGS, "train": 9})  # no generated.json
    assert s.shape == (2, 6) and t.shape == (2, 8) and s.dtype == np.int32
    np.testing.assert_array_equal(s[:, :2], src)
    assert (s[:, 2:] == 0).all() and (t[:, 4:] == 0).all()
    with pytest.raises(DataError, match="outside --vocab 5"):
        load_task_splits(tmp_path, {**SETTINGS, "vocab": 5})
    with pytest.raises(DataError, match="raise --seq-len"):
        load_task_splits(tmp_path, {**SETTINGS, "max_len": 1})
    np.savez(tmp_path / "test.npz", src=src.astype(np.float32), tgt=tgt)
    with pytest.raises(DataError, match="2-D integer arrays"):
        load_task_splits(tmp_path, SETTINGS)
    (tmp_path / "test.npz").write_bytes((tmp_path / "train.npz").read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read .*test.npz"):
        load_task_splits(tmp_path, SETTINGS)
