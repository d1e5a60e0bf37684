"""Text to token arrays for BERT: cleaning, truncation strategies, a tokenisation cache and
length buckets.

Long IMDB reviews carry their verdict at the start and at the end; ``head+tail`` keeps the
first quarter of the budget from the start and the rest from the end (Sun et al., 2019,
"How to Fine-Tune BERT for Text Classification?").
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from jaxhw.files import optional_write, write_atomically

Truncation = Literal["head", "tail", "head+tail"]
TRUNCATIONS = ("head", "tail", "head+tail")
CACHE_ENV = "JAXHW_CACHE_DIR"
_TAGS = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean(text: str) -> str:
    """Replace the ``<br />`` tags of the IMDB release with spaces."""
    return _TAGS.sub(" ", text)


def truncate(ids: Sequence[int], budget: int, how: Truncation) -> list[int]:
    """Cut a token list to ``budget`` tokens by ``how``."""
    if len(ids) <= budget:
        return list(ids)
    if how == "head":
        return list(ids[:budget])
    if how == "tail":
        return list(ids[len(ids) - budget:])
    if how == "head+tail":
        head = budget // 4
        return list(ids[:head]) + list(ids[len(ids) - (budget - head):])
    raise ValueError(f"unknown truncation {how!r}; choose one of {TRUNCATIONS}")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, "~/.cache/jaxhw")).expanduser() / "tokenized"


def tokenize(texts: Sequence[str], tokenizer, max_len: int, how: Truncation = "head+tail",
             cache: bool = True, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``texts`` -> ``input_ids`` and ``attention_mask``, int32 ``[N, max_len]``:
    ``[CLS] tokens [SEP]`` then padding (id ``tokenizer.pad_token_id``).

    The fast tokenizer runs in batches without truncation; then each row is cut by ``how``.
    Results are cached under ``$JAXHW_CACHE_DIR/tokenized`` (default ``~/.cache/jaxhw``),
    keyed by the texts, the tokenizer's vocabulary, ``max_len`` and ``how``.
    """
    if how not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {how!r}; choose one of {TRUNCATIONS}")
    if max_len < 3:
        raise ValueError(f"max_len must be at least 3 ([CLS], a token, [SEP]), got {max_len}")
    key = hashlib.sha256()
    # The serialised fast tokenizer (vocabulary, normaliser, rules) identifies it exactly.
    for part in (tokenizer.backend_tokenizer.to_str(), str(max_len), how, str(len(texts))):
        key.update(part.encode())
    for text in texts:
        key.update(text.encode("utf-8", "surrogatepass"))
    path = cache_dir() / f"{key.hexdigest()[:32]}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            return f["input_ids"], f["attention_mask"]

    ids = np.full((len(texts), max_len), tokenizer.pad_token_id, np.int32)
    budget = max_len - 2
    for start in range(0, len(texts), batch):
        chunk = [clean(t) for t in texts[start:start + batch]]
        encoded = tokenizer(chunk, add_special_tokens=False, truncation=False,
                            return_attention_mask=False, verbose=False)["input_ids"]
        for row, tokens in enumerate(encoded, start):
            tokens = [tokenizer.cls_token_id, *truncate(tokens, budget, how), tokenizer.sep_token_id]
            ids[row, :len(tokens)] = tokens
    mask = (np.arange(max_len)[None, :] < _lengths(ids, tokenizer.pad_token_id)[:, None])
    mask = mask.astype(np.int32)
    if cache:  # a cache the run can do without: a failed write is one warning
        optional_write("the tokenised reviews' cache", write_atomically, path,
                       lambda tmp: np.savez(tmp, input_ids=ids, attention_mask=mask))
    return ids, mask


def _lengths(ids: np.ndarray, pad_id: int) -> np.ndarray:
    """Length of each row up to its last non-padding token."""
    nonpad = ids != pad_id
    return np.where(nonpad.any(1), ids.shape[1] - np.argmax(nonpad[:, ::-1], axis=1), 0)


def bucket_by_length(input_ids: np.ndarray, attention_mask: np.ndarray, labels: np.ndarray,
                     boundaries: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Split rows into buckets by token count, each cut to its boundary length, so short
    reviews are not padded to the longest. Returns ``[(ids [n_b, L_b], mask, labels)]``
    for the non-empty buckets, shortest first; ``boundaries`` ascending, the last equal to
    the arrays' width."""
    boundaries = sorted(boundaries)
    if boundaries[-1] != input_ids.shape[1]:
        raise ValueError(f"the last bucket boundary ({boundaries[-1]}) must equal the sequence "
                         f"length ({input_ids.shape[1]})")
    lengths = attention_mask.sum(axis=1)
    buckets, lower = [], 0
    for upper in boundaries:
        rows = np.flatnonzero((lengths > lower) & (lengths <= upper))
        if len(rows):
            buckets.append((input_ids[rows, :upper], attention_mask[rows, :upper], labels[rows]))
        lower = upper
    return buckets
