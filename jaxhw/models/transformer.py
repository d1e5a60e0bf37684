"""The Transformer of "Attention Is All You Need", from scratch (Part 1-2).

Shapes: ``B`` batch, ``L``/``S`` target/source length, ``D`` model dim, ``H`` heads,
``d = D / H`` per-head ("word") dim, ``V`` vocabulary. Token id 0 is padding.
Masks are boolean, ``True`` = may attend, broadcastable to ``[B, H, L_q, L_k]``.

``init_style="torch"`` reproduces PyTorch's default initialisation (``nn.Linear``: weights and
biases uniform in +-1/sqrt(fan_in); ``nn.Embedding``: N(0, 1)), which is what the
original demo's first loss (about 8.68) assumes; ``init_style="flax"`` keeps Flax's defaults.

``dtype`` is the computation dtype of embeddings, projections and FFNs (``jnp.bfloat16``
for mixed precision); parameters stay float32, and the attention softmax and layer norms
compute in float32.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Init = Literal["flax", "torch"]
Dtype = Any
NEG_INF = -1e9  # "very negative" score for masked positions (exp underflows to 0)


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def dense(features: int, fan_in: int, init: Init, name: str | None = None,
          dtype: Dtype = jnp.float32) -> nn.Dense:
    """A dense layer initialised like Flax's default or like PyTorch's ``nn.Linear``."""
    if init == "torch":
        bound = 1.0 / math.sqrt(fan_in)
        return nn.Dense(features, kernel_init=_uniform(bound), bias_init=_uniform(bound),
                        dtype=dtype, name=name)
    return nn.Dense(features, dtype=dtype, name=name)


def embed(vocab: int, dim: int, init: Init, name: str | None = None,
          dtype: Dtype = jnp.float32) -> nn.Embed:
    if init == "torch":
        return nn.Embed(vocab, dim, embedding_init=nn.initializers.normal(1.0), dtype=dtype,
                        name=name)
    return nn.Embed(vocab, dim, dtype=dtype, name=name)


def positional_encoding_table(seq_len_max: int, dim: int) -> np.ndarray:
    """``[seq_len_max, dim]``: PE[pos, 2i] = sin(pos / 10000^(2i/dim)),
    PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))."""
    pos = np.arange(seq_len_max, dtype=np.float64)[:, None]
    two_i = np.arange(0, dim, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, two_i / dim)
    table = np.zeros((seq_len_max, dim))
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : dim // 2])
    return table.astype(np.float32)


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoid table (a constant, not a parameter) to ``[B, L, D]``."""

    dim: int
    seq_len_max: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        chex.assert_rank(x, 3)
        if x.shape[1] > self.seq_len_max or x.shape[2] != self.dim:
            raise ValueError(f"PositionalEncoding({self.dim}, {self.seq_len_max}) got input of "
                             f"shape {x.shape}: length must be <= {self.seq_len_max}, "
                             f"last axis {self.dim}")
        table = positional_encoding_table(self.seq_len_max, self.dim)
        return x + jnp.asarray(table[: x.shape[1]], x.dtype)[None]


def padding_mask(tokens: jnp.ndarray) -> jnp.ndarray:
    """``[B, L]`` tokens -> ``[B, 1, 1, L]``: keys that are not padding (id 0)."""
    return (tokens != 0)[:, None, None, :]


def causal_mask(length: int) -> jnp.ndarray:
    """``[1, 1, L, L]``: query position i may attend to key positions j <= i."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def target_mask(tokens: jnp.ndarray) -> jnp.ndarray:
    """``[B, 1, L, L]``: the causal mask combined with the target's padding mask."""
    return padding_mask(tokens) & causal_mask(tokens.shape[1])


def split_heads(x: jnp.ndarray, heads: int) -> jnp.ndarray:
    """``[B, L, D]`` -> ``[B, H, L, D / H]``."""
    b, length, dim = x.shape
    return x.reshape(b, length, heads, dim // heads).transpose(0, 2, 1, 3)


def combine_heads(x: jnp.ndarray) -> jnp.ndarray:
    """``[B, H, L, d]`` -> ``[B, L, H * d]``."""
    b, h, length, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, length, h * d)


def scaled_dot_product(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                       mask: jnp.ndarray | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``q [B, H, Lq, d]``, ``k, v [B, H, Lk, d]`` -> (``[B, H, Lq, d]``, probs
    ``[B, H, Lq, Lk]``, float32): softmax over the key axis of ``q k^T / sqrt(d)``. The
    products run in the inputs' dtype; masking and softmax in float32."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(q.shape[-1]))
    chex.assert_shape(scores, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
    if mask is not None:
        scores = jnp.where(mask, scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v), probs


class MultiHeadAttention(nn.Module):
    """``MultiHeadAttention(dim, head_num)``: separate W_q, W_k, W_v, W_o (each D -> D).

    ``query [B, Lq, D]``, ``key``/``value`` ``[B, Lk, D]`` -> ``[B, Lq, D]``. The
    attention probabilities ``[B, H, Lq, Lk]`` are sown as ``intermediates/attention``.
    """

    dim: int
    head_num: int
    init_style: Init = "flax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query, key, value, mask=None):
        if self.dim % self.head_num:
            raise ValueError(f"dim {self.dim} is not divisible by head_num {self.head_num}")
        chex.assert_rank([query, key, value], 3)
        chex.assert_equal_shape([key, value])
        chex.assert_axis_dimension(query, 2, self.dim)
        proj = lambda name: dense(self.dim, self.dim, self.init_style, name, self.dtype)  # noqa: E731
        q = split_heads(proj("W_q")(query), self.head_num)
        k = split_heads(proj("W_k")(key), self.head_num)
        v = split_heads(proj("W_v")(value), self.head_num)
        heads, probs = scaled_dot_product(q, k, v, mask)
        self.sow("intermediates", "attention", probs)
        out = proj("W_o")(combine_heads(heads))
        chex.assert_equal_shape([out, query])
        return out


class FFN(nn.Module):
    """Position-wise feed-forward: dense(FFN_dim) -> ReLU -> dense(dim)."""

    dim: int
    ffn_dim: int
    init_style: Init = "flax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.relu(dense(self.ffn_dim, self.dim, self.init_style, dtype=self.dtype)(x))
        return dense(self.dim, self.ffn_dim, self.init_style, dtype=self.dtype)(x)


class EncoderLayer(nn.Module):
    """Post-norm: x = LN(x + Dropout(SelfAttn(x))); x = LN(x + Dropout(FFN(x)))."""

    dim: int
    head_num: int
    ffn_dim: int
    dropout: float = 0.1
    init_style: Init = "flax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, src_mask, train: bool = False):
        drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
        norm = lambda: nn.LayerNorm(dtype=self.dtype)  # noqa: E731
        attention = MultiHeadAttention(self.dim, self.head_num, self.init_style, self.dtype,
                                       name="self_attention")
        x = norm()(x + drop(attention(x, x, x, src_mask)))
        return norm()(x + drop(FFN(self.dim, self.ffn_dim, self.init_style, self.dtype)(x)))


class DecoderLayer(nn.Module):
    """Post-norm: masked self-attention, cross-attention over the encoder output, FFN;
    dropout after each sublayer, three LayerNorms."""

    dim: int
    head_num: int
    ffn_dim: int
    dropout: float = 0.1
    init_style: Init = "flax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, memory, src_mask, tgt_mask, train: bool = False):
        drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)  # noqa: E731
        norm = lambda: nn.LayerNorm(dtype=self.dtype)  # noqa: E731
        mha = lambda name: MultiHeadAttention(self.dim, self.head_num, self.init_style,  # noqa: E731
                                              self.dtype, name=name)
        x = norm()(x + drop(mha("self_attention")(x, x, x, tgt_mask)))
        x = norm()(x + drop(mha("cross_attention")(x, memory, memory, src_mask)))
        return norm()(x + drop(FFN(self.dim, self.ffn_dim, self.init_style, self.dtype)(x)))


class Transformer(nn.Module):
    """Encoder-decoder Transformer: ``(src [B, S], tgt [B, L]) -> logits [B, L, V_out]``."""

    input_lib_size: int
    output_lib_size: int
    dim: int = 512
    head_num: int = 8
    layer_num: int = 6
    ffn_dim: int = 2048
    seq_len_max: int = 100
    dropout: float = 0.1
    init_style: Init = "flax"
    dtype: Dtype = jnp.float32  # computation dtype (parameters stay float32)

    def setup(self):
        self.src_embed = embed(self.input_lib_size, self.dim, self.init_style, dtype=self.dtype)
        self.tgt_embed = embed(self.output_lib_size, self.dim, self.init_style, dtype=self.dtype)
        self.pe = PositionalEncoding(self.dim, self.seq_len_max)
        self.embed_dropout = nn.Dropout(self.dropout)
        args = (self.dim, self.head_num, self.ffn_dim, self.dropout, self.init_style, self.dtype)
        self.encoder = [EncoderLayer(*args) for _ in range(self.layer_num)]
        self.decoder = [DecoderLayer(*args) for _ in range(self.layer_num)]
        self.out = dense(self.output_lib_size, self.dim, self.init_style, dtype=self.dtype)

    def encode(self, src: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """``src [B, S]`` int -> memory ``[B, S, D]``."""
        chex.assert_rank(src, 2)
        x = self.embed_dropout(self.pe(self.src_embed(src)), deterministic=not train)
        mask = padding_mask(src)
        for layer in self.encoder:
            x = layer(x, mask, train)
        return x

    def decode(self, memory: jnp.ndarray, src: jnp.ndarray, tgt: jnp.ndarray,
               train: bool = False) -> jnp.ndarray:
        """``memory [B, S, D]``, ``src [B, S]``, ``tgt [B, L]`` -> logits ``[B, L, V_out]``."""
        x = self.embed_dropout(self.pe(self.tgt_embed(tgt)), deterministic=not train)
        src_mask, tgt_mask = padding_mask(src), target_mask(tgt)
        for layer in self.decoder:
            x = layer(x, memory, src_mask, tgt_mask, train)
        logits = self.out(x)
        chex.assert_shape(logits, (*tgt.shape, self.output_lib_size))
        return logits

    def __call__(self, src: jnp.ndarray, tgt: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        return self.decode(self.encode(src, train), src, tgt, train)


def greedy_decode(model: Transformer, params, src: jnp.ndarray, bos: int, eos: int,
                  max_len: int) -> jnp.ndarray:
    """Autoregressive greedy decoding under ``jax.lax.fori_loop``.

    ``src [B, S]`` -> ``[B, max_len]`` tokens starting with ``bos``; after ``eos`` a
    sequence is padded with 0. The encoder runs once; each step re-runs the decoder on the
    prefix (the causal mask makes the padded tail invisible).
    """
    b = src.shape[0]
    variables = {"params": params}
    memory = model.apply(variables, src, method=Transformer.encode)
    tokens = jnp.zeros((b, max_len), jnp.int32).at[:, 0].set(bos)
    done = jnp.zeros((b,), bool)

    def step(i, carry):
        tokens, done = carry
        logits = model.apply(variables, memory, src, tokens, method=Transformer.decode)
        nxt = jnp.argmax(logits[:, i - 1], axis=-1).astype(jnp.int32)
        nxt = jnp.where(done, 0, nxt)
        return tokens.at[:, i].set(nxt), done | (nxt == eos)

    tokens, _ = jax.lax.fori_loop(1, max_len, step, (tokens, done))
    return tokens
