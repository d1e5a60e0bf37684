"""CNNs for CIFAR-10 (Part 1-1), NHWC throughout.

* :class:`SimpleCNN` - the fixed Problem 1 network.
* :class:`Inception`, :class:`ResidualBlock` - the Problem 2 building blocks.
* :class:`InceptionCNN` - the handout's small Inception network (9x9 stem, one module).
* :class:`BetterNet` - Problem 3, our CIFAR-10 network built from those blocks.

BetterNet's design (why each piece is there):

* **Resolution drops early.** A stem (a 3x3 convolution at 32x32 with few channels, or
  airbench's frozen 2x2 whitening convolution), then a 2x2 max pool: everything after
  runs at 16x16 (15x15) or less. On a CPU, XLA's convolution backward pass is
  slowest at large spatial size x batch, so this is most of the CPU speed; on a GPU it
  simply saves FLOPs, and CIFAR's 32x32 objects survive it (airbench does the same).
* **An Inception module at 16x16** mixes 1x1, 3x3, 5x5 and pooled views of the stem's
  features (the Problem 2 block), widening to ``widths[0]`` channels.
* **Residual stages** (Problem 2's ``ResidualBlock``) at 16x16, 8x8 and 4x4 with widths
  ``widths``; the first block of each later stage halves the resolution with stride 2 and
  a projection shortcut. Residual connections make this depth train in few epochs.
* **Or compute, then pool** (``downsample="pool"``, airbench's order): the Inception
  module at the stem's 31x31 and the first block of each later stage at its input's
  resolution, each followed by a 2x2 max pool (31 -> 15 -> 7 -> 3), so no convolution
  skips positions with a stride.
* **Global pooling + one dense layer** (average, or airbench's max with the logits / 9),
  so the head has few parameters and the network does not overfit its 4x4 map position
  by position.
* Batch norm after every convolution (zero-initialised scale on each block's last BN
  would be a further trick; we keep the blocks exactly as specified).

Every module is given its layers the Flax way: ``conv`` (a partial of ``nn.Conv``, e.g. with
jaxhw's CPU ``conv_general_dilated``, ``jaxhw.ops.layers``), ``norm`` (a partial of
``nn.BatchNorm``: PyTorch's momentum and epsilon by default, airbench's settings in the gpu
preset), ``act`` (ReLU, as in the spec) and ``max_pool`` (``flax.linen.max_pool``'s
signature); BetterNet also takes its ``stem`` and ``head``, functions that build those
layers in its scope. The CPU layers change speed only: values and gradients agree to float rounding.
The networks also take ``dtype``, what their convolutions, dense layers and batch norms
compute in (``jnp.bfloat16`` for mixed precision on a GPU); parameters and batch-norm
statistics stay float32 whatever ``dtype`` is.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

Dtype = Any  # a jnp dtype: the computation dtype of a module (parameters stay float32)
Activation = Callable[[jnp.ndarray], jnp.ndarray]
ModuleDef = Any  # a flax module class or a functools.partial of one
PoolFn = Callable[..., jnp.ndarray]  # flax.linen.max_pool's signature

# PyTorch's BatchNorm2d defaults, as in the original notebooks (its momentum 0.1 is flax's
# 0.9: flax's momentum is the weight of the running average).
BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


class SimpleCNN(nn.Module):
    """Problem 1, fixed: conv7x7(8) - pool - conv4x4(16) - pool - 100 - 80 - 10.

    ``[B, 32, 32, 3]`` -> logits ``[B, 10]``; VALID padding, so the flattened feature is
    16 * 5 * 5 = 400 as in the original.
    """

    convolutional: ClassVar[bool] = True  # one step per device call on a CPU

    num_classes: int = 10
    conv: ModuleDef = nn.Conv
    max_pool: PoolFn = nn.max_pool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no dropout or batch norm
        conv = functools.partial(self.conv, padding="VALID", dtype=self.dtype)
        x = nn.relu(conv(8, (7, 7))(x))                              # [B, 26, 26, 8]
        x = self.max_pool(x, (2, 2), strides=(2, 2))  # [B, 13, 13, 8]
        x = nn.relu(conv(16, (4, 4))(x))                             # [B, 10, 10, 16]
        x = self.max_pool(x, (2, 2), strides=(2, 2))  # [B, 5, 5, 16]
        x = x.reshape(x.shape[0], -1)                                # [B, 400]
        x = nn.relu(nn.Dense(100, dtype=self.dtype)(x))
        x = nn.relu(nn.Dense(80, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x)


class ConvBN(nn.Module):
    """Conv -> BatchNorm -> ReLU, spatial size kept (SAME padding, stride 1)."""

    features: int
    kernel: int
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = BatchNorm
    act: Activation = nn.relu

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = self.conv(self.features, (self.kernel, self.kernel), padding="SAME")(x)
        return self.act(self.norm(use_running_average=not train)(x))


class Inception(nn.Module):
    """Problem 2: four parallel branches concatenated on the channel axis.

    b1 = 1x1 -> n1x1; b2 = 1x1 -> n3x3_blue, 3x3 -> n3x3; b3 = 1x1 -> n5x5_blue,
    5x5 -> n5x5; b4 = 3x3 max pool (stride 1, SAME), 1x1 -> pool_planes; BN + ReLU after
    every conv. ``[B, H, W, in_planes]`` -> ``[B, H, W, n1x1 + n3x3 + n5x5 + pool_planes]``.
    """

    in_planes: int
    n1x1: int
    n3x3_blue: int
    n3x3: int
    n5x5_blue: int
    n5x5: int
    pool_planes: int
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = BatchNorm
    act: Activation = nn.relu
    max_pool: PoolFn = nn.max_pool

    @property
    def out_planes(self) -> int:
        return self.n1x1 + self.n3x3 + self.n5x5 + self.pool_planes

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.shape[-1] != self.in_planes:
            raise ValueError(f"Inception expects {self.in_planes} input channels (NHWC), "
                             f"got input of shape {x.shape}")
        ops = dict(conv=self.conv, norm=self.norm, act=self.act)
        y1 = ConvBN(self.n1x1, 1, **ops)(x, train)
        # (outer module first: flax names modules in the order they are built)
        y2 = ConvBN(self.n3x3, 3, **ops)(ConvBN(self.n3x3_blue, 1, **ops)(x, train), train)
        y3 = ConvBN(self.n5x5, 5, **ops)(ConvBN(self.n5x5_blue, 1, **ops)(x, train), train)
        pooled = self.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
        y4 = ConvBN(self.pool_planes, 1, **ops)(pooled, train)
        return jnp.concatenate([y1, y2, y3, y4], axis=-1)


class ResidualBlock(nn.Module):
    """Problem 2: 3x3 conv (stride) - BN - ReLU - 3x3 conv - BN, plus a shortcut that is the
    identity unless ``stride != 1`` or ``in_channels != out_channels`` (then 1x1 conv with
    that stride + BN); output ReLU(main + shortcut). Convolutions have no bias.

    ``[B, H, W, in_channels]`` -> ``[B, ceil(H / stride), ceil(W / stride), out_channels]``.
    """

    in_channels: int
    out_channels: int
    stride: int = 1
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = BatchNorm
    act: Activation = nn.relu

    @property
    def has_projection(self) -> bool:
        return self.stride != 1 or self.in_channels != self.out_channels

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"ResidualBlock expects {self.in_channels} input channels (NHWC), "
                             f"got input of shape {x.shape}")
        s = (self.stride, self.stride)
        norm = functools.partial(self.norm, use_running_average=not train)
        conv = functools.partial(self.conv, use_bias=False)
        y = conv(self.out_channels, (3, 3), s, padding=((1, 1), (1, 1)))(x)
        y = self.act(norm()(y))
        y = conv(self.out_channels, (3, 3), padding=((1, 1), (1, 1)))(y)
        y = norm()(y)
        shortcut = x
        if self.has_projection:
            shortcut = norm()(conv(self.out_channels, (1, 1), s, padding="VALID")(x))
        return self.act(y + shortcut)


class InceptionCNN(nn.Module):
    """The handout's small Inception network: conv9x9(8) - pool3 - conv9x9(8) - pool3 -
    Inception - dense 10. ``[B, 32, 32, 3]`` -> ``[B, 10]``."""

    convolutional: ClassVar[bool] = True  # one step per device call on a CPU

    num_classes: int = 10
    inception: Sequence[int] = (16, 16, 32, 4, 8, 8)  # n1x1, n3x3_blue, n3x3, n5x5_blue, n5x5, pool
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = BatchNorm
    max_pool: PoolFn = nn.max_pool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        conv = functools.partial(self.conv, dtype=self.dtype)
        for _ in range(2):
            x = nn.relu(conv(8, (9, 9), padding="SAME")(x))
            x = self.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")  # 32 -> 16 -> 8
        x = Inception(8, *self.inception, conv=conv,
                      norm=functools.partial(self.norm, dtype=self.dtype),
                      max_pool=self.max_pool)(x, train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x.reshape(x.shape[0], -1))


# BetterNet's stem: (x [B, 32, 32, 3], train, conv, norm, act) -> [B, H, W, C]
# features; its head: (features [B, H, W, C], num_classes, dtype) -> logits. Both create
# their layers in BetterNet's own scope (the parameter paths ``ConvBN_0``, ``whiten``,
# ``Dense_0``).
Stem = Callable[..., jnp.ndarray]
Head = Callable[..., jnp.ndarray]


def conv_stem(features: int = 32) -> Stem:
    """A 3x3 convolution + BN + ``act`` at 32x32: ``[B, 32, 32, features]``."""
    def stem(x, train, conv, norm, act):
        return ConvBN(features, 3, conv=conv, norm=norm, act=act)(x, train)
    return stem


def whitening_stem(x, train, conv, norm, act):
    """airbench's stem: a 2x2 VALID convolution with ``2 * 3 * 2 * 2 = 24`` filters and a
    bias, its kernel set from the training data by :func:`whitening_kernel` and frozen by
    the optimizer, then ``act``: ``[B, 32, 32, 3]`` -> ``[B, 31, 31, 24]``."""
    del train, norm
    return act(conv(WHITEN_WIDTH, (WHITEN_PATCH, WHITEN_PATCH), padding="VALID",
                    name="whiten")(x))


def dense_head(pool: str = "avg", scale: float = 1.0) -> Head:
    """Global ``pool`` ("avg" or "max") pooling and one dense layer; with ``scale`` != 1
    (airbench: max pooling, 1/9) the dense layer has no bias and the logits are multiplied
    by ``scale``."""
    if pool not in ("avg", "max"):
        raise ValueError(f"the head's pool must be 'avg' or 'max', got {pool!r}")
    reduce = jnp.mean if pool == "avg" else jnp.max

    def head(x, num_classes, dtype):
        x = reduce(x.astype(jnp.float32), axis=(1, 2))                # [B, C]
        logits = nn.Dense(num_classes, use_bias=scale == 1.0, dtype=dtype)(x)
        return logits if scale == 1.0 else logits * scale
    return head


class BetterNet(nn.Module):
    """Problem 3 (see the module docstring for the design).

    ``stem`` (:func:`conv_stem` or :func:`whitening_stem`) -> Inception to ``widths[0]``
    -> stages of ``blocks[s]`` ResidualBlocks at width ``widths[s]`` -> ``head``
    (:func:`dense_head`: global pooling and a dense layer). ``downsample`` says where the
    resolution halves: ``"stride"``, a 2x2 max pool before the Inception module and stride
    2 in the first block of every later stage; ``"pool"`` (airbench's compute-then-pool),
    a 2x2 max pool after the Inception module and after the first (stride-1) block of every
    later stage. ``[B, 32, 32, 3]`` -> ``[B, num_classes]``.
    """

    convolutional: ClassVar[bool] = True  # one step per device call on a CPU

    num_classes: int = 10
    widths: Sequence[int] = (64, 128, 256)
    blocks: Sequence[int] = (1, 1, 1)  # residual blocks per stage
    stem: Stem = conv_stem(32)
    head: Head = dense_head()
    downsample: str = "stride"
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = BatchNorm
    act: Activation = nn.relu
    max_pool: PoolFn = nn.max_pool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks} differ in length")
        if self.downsample not in ("stride", "pool"):
            raise ValueError(f"downsample must be 'stride' or 'pool', got {self.downsample!r}")
        pool = self.downsample == "pool"

        def halve(y):
            return self.max_pool(y, (2, 2), strides=(2, 2))

        conv = functools.partial(self.conv, dtype=self.dtype)
        ops = dict(conv=conv, norm=functools.partial(self.norm, dtype=self.dtype), act=self.act)
        x = self.stem(x, train, **ops)                                 # [B, 32 or 31, .., C]
        if not pool:
            x = halve(x)                                               # [B, 16 or 15, .., C]
        w0 = self.widths[0]
        # Inception widths: half 3x3, a quarter 1x1, an eighth each 5x5 and pool branch.
        x = Inception(x.shape[-1], w0 // 4, w0 // 4, w0 // 2, w0 // 16, w0 // 8, w0 // 8,
                      max_pool=self.max_pool, **ops)(x, train)
        if pool:
            x = halve(x)
        c = w0
        for stage, (width, blocks) in enumerate(zip(self.widths, self.blocks)):
            for block in range(blocks):
                first = stage > 0 and block == 0   # the block that halves the resolution
                x = ResidualBlock(c, width, 2 if first and not pool else 1, **ops)(x, train)
                if first and pool:
                    x = halve(x)
                c = width
        return self.head(x, self.num_classes, self.dtype)


# The whitening stem: 2x2 patches of 3 channels, each of the 12 whitening directions used
# with both signs so that a ReLU or GELU after it loses nothing.
WHITEN_PATCH = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_PATCH ** 2


def image_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """Every ``patch x patch`` window (stride 1) of ``[N, H, W, C]`` images, flattened in
    HWC order: ``[N * (H - patch + 1) * (W - patch + 1), patch * patch * C]``."""
    n, h, w, c = images.shape
    rows = [images[:, i:h - patch + 1 + i, j:w - patch + 1 + j, :]
            for i in range(patch) for j in range(patch)]              # each [N, Ho, Wo, C]
    return np.stack(rows, axis=3).reshape(-1, patch * patch * c)


def whitening_kernel(images: np.ndarray, patch: int = WHITEN_PATCH, eps: float = 5e-4
                     ) -> np.ndarray:
    """The frozen first convolution of the speed-run BetterNet (airbench's patch whitening).

    ``images``: normalised training images ``[N, H, W, C]`` (a few thousand are enough).
    With ``C`` = the (uncentred) second-moment matrix of their ``patch x patch`` windows and
    ``C = V diag(lam) V^T``, the filters are ``V / sqrt(lam + eps)`` and their negatives, so
    the first half of the outputs has (close to) identity covariance over those patches.
    Returns an HWIO kernel ``[patch, patch, C, 2 * patch * patch * C]`` (float32).
    """
    flat = image_patches(np.asarray(images, np.float64), patch)       # [P, p*p*C]
    cov = flat.T @ flat / len(flat)
    lam, vecs = np.linalg.eigh(cov)                                    # ascending
    lam, vecs = lam[::-1], vecs[:, ::-1]                               # strongest first
    filters = vecs / np.sqrt(lam + eps)                                # [p*p*C, p*p*C]
    kernel = filters.reshape(patch, patch, images.shape[-1], -1)       # HWIO
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)
