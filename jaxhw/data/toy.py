"""Synthetic sequence tasks for the from-scratch Transformer (Part 1-2).

Token ids: 0 = padding, 1 = BOS, 2 = EOS, 3.. = content. A task maps a content sequence
to its target: ``reverse`` (the default proof that the model learns), ``copy`` and ``sort``.
"""

from __future__ import annotations

import numpy as np

PAD, BOS, EOS, FIRST = 0, 1, 2, 3
TASKS = {
    "reverse": lambda seq: seq[::-1],
    "copy": lambda seq: seq,
    "sort": lambda seq: np.sort(seq),
}


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
    distinct = sum((vocab - FIRST) ** length for length in range(min_len, max_len + 1))
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
