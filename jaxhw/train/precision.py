"""Mixed precision: which dtype the models compute in.

Parameters, optimizer state, batch-norm statistics and the loss stay float32 in every mode;
only matmuls and convolutions (and the activations between them) use the compute dtype.
bfloat16 has float32's exponent range, so no loss scaling is needed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxhw.config import ConfigError

DTYPES = ("auto", "bfloat16", "float32")
DTYPE_HELP = ("compute dtype of matmuls and convolutions: auto (bfloat16 on a GPU or TPU, "
              "float32 on a CPU, where bfloat16 is emulated and slower), bfloat16 or float32; "
              "parameters, optimizer state and the loss stay float32")


def compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """``"auto" | "bfloat16" | "float32"`` -> the dtype (``auto`` looks at ``backend``,
    default JAX's default backend)."""
    if name not in DTYPES:
        raise ConfigError(f"unknown --dtype {name!r}; choose one of {', '.join(DTYPES)}")
    if name == "auto":
        backend = backend or jax.default_backend()
        return jnp.dtype(jnp.bfloat16 if backend in ("gpu", "cuda", "rocm", "tpu")
                         else jnp.float32)
    return jnp.dtype(name)
