"""XLA compile options, passed per ``jax.jit`` (``compiler_options``).

On a CPU, XLA hands every convolution to its YNNPACK library by default, whose convolutions
trained this project's CNNs several times slower than XLA's built-in ones (docs/benchmarks.md):
:func:`cpu_conv_options` keeps YNNPACK for matmuls and reductions only.

XLA's GPU compiler autotunes every matmul and convolution fusion by running candidate
kernels (cuBLAS algorithms, Triton tilings, cuDNN algorithms) on the device; on large
programs such as a BERT-base train step this is most of the compile time.
``xla_gpu_autotune_level`` 0 skips it: the libraries' heuristics then pick the kernels.
"""

from __future__ import annotations

import jax

# XLA's library fusions on the CPU: matmuls and reductions go to YNNPACK (its default),
# convolutions do not (the default also sends LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION).
CPU_CONV_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}

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


# XLA's GPU backend picks kernels (atomics in scatters and reductions, autotuned algorithms)
# whose results may differ from run to run; this option makes them deterministic.
DETERMINISTIC_OPTIONS = {"xla_gpu_deterministic_ops": "True"}
DETERMINISTIC_HELP = ("XLA's deterministic GPU ops: the same seed gives the same results on "
                      "a GPU; scatters get slower and autotuning is off (docs/engine.md). A "
                      "CPU run is deterministic without it")


def deterministic_options(on: bool, backend: str | None = None) -> dict[str, str] | None:
    """:data:`DETERMINISTIC_OPTIONS` when ``on`` and the backend is a GPU, else None."""
    return dict(DETERMINISTIC_OPTIONS) if on and (backend or jax.default_backend()) == "gpu" else None


def cpu_conv_options(fast: bool, backend: str | None = None) -> dict[str, str] | None:
    """:data:`CPU_CONV_OPTIONS` when ``fast`` (jaxhw's CPU layers, ``jaxhw.ops.layers``) and
    the backend (default: JAX's default backend) is the CPU, else None (XLA's defaults)."""
    return dict(CPU_CONV_OPTIONS) if fast and (backend or jax.default_backend()) == "cpu" else None


# Memory analysis reads XLA's buffer assignment, which is fixed once the HLO passes are done;
# LLVM's optimization level only changes the machine code after it. Level 0 gives the same
# bytes (checked on bert-base's train block: identical to the byte) in about 3/4 of the
# compile time on a CPU.
ANALYSIS_OPTIONS = {"xla_backend_optimization_level": "0"}


def analysis_options(backend: str | None = None) -> dict[str, str] | None:
    """:data:`ANALYSIS_OPTIONS` on a CPU, for programs compiled only to be measured (never
    run: their code is unoptimised); None elsewhere (XLA's defaults)."""
    return dict(ANALYSIS_OPTIONS) if (backend or jax.default_backend()) == "cpu" else None


def merge(*options: dict[str, str] | None) -> dict[str, str] | None:
    """Several ``compiler_options`` dicts as one (None when all are None)."""
    merged = {k: v for o in options if o for k, v in o.items()}
    return merged or None
