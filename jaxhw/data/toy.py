"""Synthetic sequence tasks for the from-scratch Transformer (Part 1-2).

Token ids: 0 = padding, 1 = BOS, 2 = EOS, 3.. = content. A task maps a content sequence
to its target: ``reverse`` (the default proof that the model learns), ``copy`` and ``sort``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from jaxhw.data.sources import DataError
from jaxhw.files import write_atomically

PAD, BOS, EOS, FIRST = 0, 1, 2, 3
TASKS = {
    "reverse": lambda seq: seq[::-1],
    "copy": lambda seq: seq,
    "sort": lambda seq: np.sort(seq),
}


def distinct_sequences(vocab: int, min_len: int, max_len: int) -> int:
    """How many different contents of lengths ``min_len..max_len`` the tokens from
    ``FIRST`` to ``vocab - 1`` make."""
    return sum((vocab - FIRST) ** length for length in range(min_len, max_len + 1))


def sequence_task(task: str, n: int, vocab: int, min_len: int, max_len: int, seed: int,
                  exclude: set[bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct examples of ``task``: ``src [n, max_len]`` (content, 0-padded) and
    ``tgt [n, max_len + 2]`` (BOS, transformed content, EOS, 0-padded).

    ``exclude`` holds ``src`` rows (as bytes) that must not appear, to keep a held-out set
    disjoint from the training set.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    if not 1 <= min_len <= max_len or vocab <= FIRST:
        raise ValueError(f"need 1 <= min_len <= max_len and vocab > {FIRST}, got "
                         f"min_len={min_len}, max_len={max_len}, vocab={vocab}")
    distinct = distinct_sequences(vocab, min_len, max_len)
    if n + len(exclude or ()) > distinct:
        raise ValueError(f"asked for {n} distinct sequences (plus {len(exclude or ())} excluded) "
                         f"but only {distinct} exist for vocab={vocab}, lengths "
                         f"{min_len}..{max_len}; raise --vocab or --seq-len")
    rng = np.random.default_rng(seed)
    src = np.zeros((n, max_len), np.int32)
    tgt = np.zeros((n, max_len + 2), np.int32)
    seen = set(exclude or ())
    i = 0
    while i < n:
        length = int(rng.integers(min_len, max_len + 1))
        seq = rng.integers(FIRST, vocab, length).astype(np.int32)
        row = np.zeros(max_len, np.int32)
        row[:length] = seq
        if row.tobytes() in seen:
            continue
        seen.add(row.tobytes())
        src[i] = row
        tgt[i, 0], tgt[i, 1:length + 1], tgt[i, length + 1] = BOS, TASKS[task](seq), EOS
        i += 1
    return src, tgt


def random_tokens(batch: int, length: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The original demo's data: source and target uniform in [1, vocab), ``[batch, length]``."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, vocab, (batch, length)).astype(np.int32),
            rng.integers(1, vocab, (batch, length)).astype(np.int32))


Sequences = tuple[np.ndarray, np.ndarray]  # src [n, max_len], tgt [n, max_len + 2]


def task_splits(task: str, n_train: int, n_test: int, vocab: int, min_len: int, max_len: int,
                seed: int) -> tuple[Sequences, Sequences]:
    """Train and held-out sequences of ``task`` (:func:`sequence_task`; the held-out ones
    are drawn with ``seed + 1`` and never appear in training)."""
    train = sequence_task(task, n_train, vocab, min_len, max_len, seed)
    test = sequence_task(task, n_test, vocab, min_len, max_len, seed + 1,
                         exclude={r.tobytes() for r in train[0]})
    return train, test


SETTINGS_FILE = "generated.json"  # how jaxhw generated a folder's sequences


def load_task_splits(folder: Path, settings: dict) -> tuple[Sequences, Sequences] | None:
    """The sequences in ``folder`` (``train.npz`` and ``test.npz`` with int arrays ``src
    [n, <= max_len]`` and ``tgt [n, <= max_len + 2]``, 0-padded, ids below ``vocab``;
    written by :func:`save_task_splits` or by hand), zero-padded to full width; None when
    the folder holds none. ``settings`` are the generation settings asked for now (with
    ``vocab`` and ``max_len``); a folder jaxhw generated must match them."""
    vocab, max_len = settings["vocab"], settings["max_len"]
    files = [folder / "train.npz", folder / "test.npz"]
    if not any(f.exists() for f in files):
        return None
    if not all(f.is_file() for f in files):
        raise DataError(f"{folder} needs both train.npz and test.npz (arrays src and tgt)")
    recorded = folder / SETTINGS_FILE
    if recorded.is_file():
        was = json.loads(recorded.read_text())
        if was != settings:
            diff = {k: (was.get(k), settings.get(k)) for k in sorted(set(was) | set(settings))
                    if was.get(k) != settings.get(k)}
            raise DataError(f"{folder} was generated with other settings (was, now: {diff}); "
                            f"pass another --data-dir, or delete that folder to regenerate")
    splits = []
    for f in files:
        try:
            with np.load(f) as z:
                src, tgt = np.asarray(z["src"]), np.asarray(z["tgt"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read {f} ({type(e).__name__}: {e}); it must be an .npz "
                            f"with int arrays src and tgt") from e
        if (src.ndim != 2 or tgt.ndim != 2 or len(src) != len(tgt) or len(src) == 0
                or not np.issubdtype(src.dtype, np.integer)
                or not np.issubdtype(tgt.dtype, np.integer)):
            raise DataError(f"{f}: src and tgt must be non-empty 2-D integer arrays with one row "
                            f"per example; got {src.dtype}{list(src.shape)} and "
                            f"{tgt.dtype}{list(tgt.shape)}")
        if src.shape[1] > max_len or tgt.shape[1] > max_len + 2:
            raise DataError(f"{f}: sequences of {src.shape[1]} source / {tgt.shape[1]} target "
                            f"tokens do not fit --seq-len {max_len} (source <= {max_len}, "
                            f"target <= {max_len + 2}); raise --seq-len")
        low, high = min(src.min(), tgt.min()), max(src.max(), tgt.max())
        if low < 0 or high >= vocab:
            raise DataError(f"{f}: token ids span {low}..{high}, outside --vocab {vocab} "
                            f"(0..{vocab - 1}); raise --vocab")
        splits.append((np.pad(src, ((0, 0), (0, max_len - src.shape[1]))).astype(np.int32),
                       np.pad(tgt, ((0, 0), (0, max_len + 2 - tgt.shape[1]))).astype(np.int32)))
    return splits[0], splits[1]


def save_task_splits(folder: Path, train: Sequences, test: Sequences, settings: dict) -> None:
    """Write ``train.npz``, ``test.npz`` and the generation ``settings`` to ``folder``, each
    file complete or absent (written under a temporary name, then renamed)."""
    for name, (src, tgt) in (("train.npz", train), ("test.npz", test)):
        write_atomically(folder / name, lambda tmp: np.savez(tmp, src=src, tgt=tgt))
    write_atomically(folder / SETTINGS_FILE,
                     lambda tmp: tmp.write_text(json.dumps(settings, indent=1)))
