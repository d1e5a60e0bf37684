"""The machine a run's CPU timings come from: CPU timings are comparable only on the same
CPU (AVX-512 machines train about twice as fast as AVX2 ones here)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The vector-instruction flags that decide XLA's CPU speed, in the order they are reported.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512ifma", "avx512vbmi", "amx_bf16")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``/proc/cpuinfo``'s, else what ``platform`` knows)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """Which of :data:`VECTOR_FLAGS` the CPU has."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in VECTOR_FLAGS if f in have]
    return []


def cpu_name(cpuinfo: str | None = None) -> str:
    """``<model> (AVX-512|AVX2|no AVX2, <cores> cores)``, e.g. for a results table."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(text)
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    cores = sum(line.startswith("processor") for line in text.splitlines())
    return f"{cpu_model(text)} ({avx}" + (f", {cores} cores)" if cores else ")")


@functools.cache  # one file per process: read it once
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return ""
