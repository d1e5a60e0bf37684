"""Vision Transformer (Part 1-3), in the layout of the original skeleton (timm-style).

Shapes: ``B`` batch, ``N`` patches, ``D`` embed dim, ``H`` heads, ``d = D / H``.

``dtype`` is what matmuls and the patch convolution compute in (``jnp.bfloat16`` for mixed
precision); parameters stay float32, and layer norms and the attention softmax compute
their statistics in float32.
"""

from __future__ import annotations

from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

_trunc_normal = nn.initializers.truncated_normal(0.02)
Dtype = Any


class PatchEmbed(nn.Module):
    """Cut ``[B, img, img, C]`` into non-overlapping ``patch x patch`` squares and embed each:
    a conv with kernel = stride = patch size, flattened to ``[B, N, D]``."""

    img_size: int = 28
    patch_size: int = 4
    embed_dim: int = 768
    dtype: Dtype = jnp.float32

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.img_size % self.patch_size:
            raise ValueError(f"image size {self.img_size} is not divisible by patch size "
                             f"{self.patch_size}; pick a patch size that divides it "
                             f"(for 28: 1, 2, 4, 7, 14 or 28)")
        chex.assert_rank(x, 4)
        if x.shape[1:3] != (self.img_size, self.img_size):
            raise ValueError(f"PatchEmbed expects [B, {self.img_size}, {self.img_size}, C] "
                             f"(NHWC), got {x.shape}")
        p = self.patch_size
        x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    name="proj")(x)
        x = x.reshape(x.shape[0], -1, self.embed_dim)
        chex.assert_shape(x, (None, self.num_patches, self.embed_dim))
        return x


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection; scale ``d^-0.5``.

    ``[B, N, D]`` -> ``[B, N, D]``; the probabilities ``[B, H, N, N]`` are sown as
    ``intermediates/attention``.
    """

    dim: int
    num_heads: int = 8
    qkv_bias: bool = True
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.dim % self.num_heads:
            raise ValueError(f"embed_dim {self.dim} is not divisible by num_heads "
                             f"{self.num_heads}")
        b, n, c = x.shape
        head_dim = self.dim // self.num_heads
        qkv = nn.Dense(3 * self.dim, use_bias=self.qkv_bias, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                     # each [B, H, N, d]
        attn = jnp.einsum("bhqd,bhkd->bhqk", q, k) * head_dim ** -0.5
        attn = jax.nn.softmax(attn.astype(jnp.float32), axis=-1)  # over keys, in float32
        chex.assert_shape(attn, (b, self.num_heads, n, n))
        self.sow("intermediates", "attention", attn)
        attn = nn.Dropout(self.attn_drop, deterministic=not train)(attn)
        x = jnp.einsum("bhqk,bhkd->bhqd", attn.astype(v.dtype), v)
        x = x.transpose(0, 2, 1, 3).reshape(b, n, c)
        x = nn.Dense(self.dim, dtype=self.dtype, name="proj")(x)
        return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class Mlp(nn.Module):
    """dense(hidden) -> GELU -> dropout -> dense(out) -> dropout."""

    hidden_features: int
    out_features: int
    drop: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.Dense(self.hidden_features, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        x = nn.Dropout(self.drop, deterministic=not train)(x)
        x = nn.Dense(self.out_features, dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.drop, deterministic=not train)(x)


class DropPath(nn.Module):
    """Stochastic depth: while training, zero a residual branch ``[B, ...]`` for a random
    ``rate`` of the examples and scale the rest by ``1 / (1 - rate)``. One random number per
    example, so it costs nothing next to element-wise dropout."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if not train or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate,
                                    (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x / (1.0 - self.rate), 0.0)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + Mlp(LN(x)); each branch
    dropped per example with probability ``drop_path`` while training."""

    dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        norm = lambda name: nn.LayerNorm(dtype=self.dtype, name=name)  # noqa: E731
        attn = Attention(self.dim, self.num_heads, attn_drop=self.attn_drop,
                         proj_drop=self.drop, dtype=self.dtype, name="attn")(norm("norm1")(x), train)
        x = x + DropPath(self.drop_path)(attn, train)
        mlp = Mlp(int(self.dim * self.mlp_ratio), self.dim, self.drop, dtype=self.dtype,
                  name="mlp")(norm("norm2")(x), train)
        return x + DropPath(self.drop_path)(mlp, train)


class VisionTransformer(nn.Module):
    """``[B, img, img, C]`` -> logits ``[B, num_classes]``: patch embedding, a learnable class
    token prepended, a learnable positional embedding ``[1, N + 1, D]``, ``depth`` blocks,
    a final LayerNorm and a linear head on the class token."""

    convolutional: ClassVar[bool] = True  # the patch embedding; see Trainer

    img_size: int = 28
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 10
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth of the last block, rising linearly from 0
    dtype: Dtype = jnp.float32   # computation dtype (parameters stay float32)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.shape[-1] != self.in_chans:
            raise ValueError(f"VisionTransformer expects {self.in_chans} channels (NHWC), got "
                             f"input of shape {x.shape}")
        embed = PatchEmbed(self.img_size, self.patch_size, self.embed_dim, self.dtype,
                           name="patch_embed")
        x = embed(x)                                                     # [B, N, D]
        b, n = x.shape[0], embed.num_patches
        cls = self.param("cls_token", _trunc_normal, (1, 1, self.embed_dim))
        pos = self.param("pos_embed", _trunc_normal, (1, n + 1, self.embed_dim))
        cls, pos = cls.astype(x.dtype), pos.astype(x.dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.embed_dim)), x], axis=1)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x + pos)  # [B, N + 1, D]
        for i in range(self.depth):
            rate = self.drop_path_rate * i / max(self.depth - 1, 1)
            x = Block(self.embed_dim, self.num_heads, self.mlp_ratio, self.drop_rate,
                      self.attn_drop_rate, rate, self.dtype, name=f"blocks_{i}")(x, train)
        x = nn.LayerNorm(dtype=self.dtype, name="norm")(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x[:, 0])
