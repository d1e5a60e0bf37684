"""A tiny conv + batch-norm classifier and a learnable synthetic dataset for engine tests,
and a tiny BERT saved like a hub model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import flax.linen as nn
import numpy as np
import optax

from jaxhw.data.preprocess import Preprocess
from jaxhw.train import Trainer


class TinyNet(nn.Module):
    convolutional: ClassVar[bool] = True  # one step per device call on a CPU, as the CNNs

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(3)(x)


def tiny_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [n, 8, 8, 3] images whose label is their brightest channel."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = images.reshape(n, -1, 3).mean(axis=1).argmax(axis=1).astype(np.int32)
    return images, labels


def tiny_trainer(mesh=None, lr: float = 0.05, compiler_options=None,
                 steps_per_call: int = 0, **kwargs) -> Trainer:
    return Trainer(TinyNet(), optax.sgd(lr, 0.9), mesh=mesh, log_every=4,
                   preprocess=Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, pad=1, flip=True),
                   compiler_options=compiler_options, steps_per_call=steps_per_call, **kwargs)


def save_tiny_bert(folder: str | os.PathLike, words: list[str]) -> Path:
    """Save a randomly initialised tiny BERT (width 16, 1 layer, 2 heads, 64 positions) and
    a WordPiece tokenizer into ``folder``, laid out like a hub model, for runs that need a
    BERT directory but no pre-trained weights (tests, ``gpu_check --smoke``). Token ids:
    [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then ``words`` from 5."""
    from transformers import BertConfig, BertTokenizerFast, FlaxBertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    FlaxBertModel(config, seed=0).save_pretrained(folder)
    return folder
