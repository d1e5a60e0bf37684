"""The BERT classifier of Part 1-4: a pre-trained Flax BERT encoder and a head.

Heads (``[B, L, D]`` encoder output -> ``[B, 2]`` logits):

* ``pooled`` - the handout's design: BERT's pooled output (tanh dense over [CLS]) ->
  dropout -> dense(hidden) -> ReLU -> dropout -> dense(classes).
* ``mean_cls`` - [CLS] concatenated with the masked mean of all token states -> dropout ->
  dense(hidden) -> ReLU -> dropout -> dense(classes). The mean sees every token of a long
  review; models trained for sentence embeddings (MiniLM) put their signal there.

``dtype`` (``jnp.bfloat16`` for mixed precision) is passed to transformers' Flax BERT, whose
matmuls then run in it; parameters stay float32 and layer norms compute their statistics in
float32 (flax's ``LayerNorm``). transformers computes the attention softmax in ``dtype``
itself; the head's masked mean is taken in float32. The pre-trained weights and tokenizers
come from :mod:`jaxhw.pretrained`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

HEADS = ("pooled", "mean_cls")


class BertClassifier(nn.Module):
    """``(input_ids [B, L], attention_mask [B, L]) -> logits [B, num_classes]``: a Flax BERT
    encoder (``FlaxBertModule``) and a head. Pre-trained encoder weights go to
    ``params["bert"]`` (see ``jaxhw.pretrained.load_pretrained``)."""

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
