"""XLA compile options for GPUs, passed per ``jax.jit`` (``compiler_options``).

XLA's GPU compiler autotunes every matmul and convolution fusion by running candidate
kernels (cuBLAS algorithms, Triton tilings, cuDNN algorithms) on the device; on large
programs such as a BERT-base train step this is most of the compile time.
``xla_gpu_autotune_level`` 0 skips it: the libraries' heuristics then pick the kernels.
"""

from __future__ import annotations

import jax

AUTOTUNE_HELP = ("XLA GPU autotuning level: -1 keeps XLA's default; 0 turns autotuning off "
                 "(fastest compile, library heuristics pick the kernels); 1-4 tune with "
                 "more checks. Ignored on a CPU")


def gpu_compiler_options(autotune: int | None, backend: str | None = None
                         ) -> dict[str, str] | None:
    """``{"xla_gpu_autotune_level": ...}`` on a GPU when ``autotune`` is 0-4; else None
    (XLA's defaults; a CPU has no such option)."""
    if autotune is None or autotune < 0 or (backend or jax.default_backend()) != "gpu":
        return None
    if autotune > 4:
        raise ValueError(f"autotune level must lie in -1..4, got {autotune}")
    return {"xla_gpu_autotune_level": str(autotune)}


def merge(*options: dict[str, str] | None) -> dict[str, str] | None:
    """Several ``compiler_options`` dicts as one (None when all are None)."""
    merged = {k: v for o in options if o for k, v in o.items()}
    return merged or None
