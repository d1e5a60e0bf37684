"""Mixed precision: which dtype the models compute in, per device.

Parameters, optimizer state, batch-norm statistics and the loss stay float32 in every mode;
only matmuls and convolutions (and the activations between them) use the compute dtype.

``auto`` picks what the device computes fastest: bfloat16 on TPUs and on NVIDIA GPUs of
compute capability 8.0 or more (A100, L4, H100, ...), which have bfloat16 tensor cores;
float16 on compute capability 7.x (T4, V100), which have float16 tensor cores but no
bfloat16 ones (XLA would compute bfloat16 there in float32); float32 on a CPU, where both
half types are emulated and slower. bfloat16 has float32's exponent range and needs no
loss scaling; float16 trains with dynamic loss scaling (:mod:`jaxhw.train.loss_scale`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxhw.config import ConfigError

DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_HELP = ("compute dtype of matmuls and convolutions: auto (bfloat16 on a TPU or a GPU "
              "of compute capability 8.0+, float16 with dynamic loss scaling on 7.x such as "
              "a T4 or V100, float32 on a CPU), bfloat16, float16 or float32; parameters, "
              "optimizer state and the loss stay float32")
BFLOAT16_UNITS = 8.0  # NVIDIA compute capability from which tensor cores take bfloat16


def compute_capability(device: Any = None) -> str | None:
    """An NVIDIA GPU's compute capability (``"7.5"`` for a T4), else None."""
    device = jax.devices()[0] if device is None else device
    return getattr(device, "compute_capability", None) if _platform(device) == "gpu" else None


def _platform(device: Any) -> str:
    platform = device if isinstance(device, str) else device.platform
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def compute_dtype(name: str, device: Any = None) -> jnp.dtype:
    """``"auto" | "bfloat16" | "float16" | "float32"`` -> the dtype. ``auto`` looks at
    ``device`` (default: JAX's first device; a platform name such as ``"gpu"`` works too,
    and a GPU of unknown compute capability gets bfloat16)."""
    if name not in DTYPES:
        raise ConfigError(f"unknown --dtype {name!r}; choose one of {', '.join(DTYPES)}")
    if name != "auto":
        return jnp.dtype(name)
    device = jax.devices()[0] if device is None else device
    platform = _platform(device)
    if platform == "tpu":
        return jnp.dtype(jnp.bfloat16)
    if platform != "gpu":
        return jnp.dtype(jnp.float32)
    capability = None if isinstance(device, str) else getattr(device, "compute_capability", None)
    if capability is not None and float(capability) < BFLOAT16_UNITS:
        return jnp.dtype(jnp.float16)
    return jnp.dtype(jnp.bfloat16)
