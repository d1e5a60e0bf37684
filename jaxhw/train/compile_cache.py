"""JAX's persistent compilation cache, on by default for every experiment.

A second run of the same command (same shapes, same jax and XLA) loads its compiled
programs from disk instead of compiling them again. The cache is process-wide JAX
configuration, so it is set once, at the start of a command.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax

DEFAULT_DIR = "~/.cache/jaxhw/compile_cache"
CACHE_HELP = (f"folder of JAX's persistent compilation cache, so a second run compiles "
              f"(almost) nothing; 'off' disables it (default: {DEFAULT_DIR})")
# Programs that compile faster than this are not worth a file (jax's default is 1 s).
MIN_COMPILE_S = 0.2


def enable_compile_cache(directory: str | os.PathLike | None = DEFAULT_DIR) -> Path | None:
    """Point JAX's persistent compilation cache at ``directory`` (``None``, ``""`` or
    ``"off"``: no cache). A folder that cannot be written is a warning, never an error:
    the run then compiles as if there were no cache. Returns the folder in use, or None."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    if directory is None or str(directory).strip().lower() in ("", "off", "none"):
        _set(None, cc)
        return None
    path = Path(directory).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        warnings.warn(f"compilation cache {path} is not writable ({e.strerror or e}); running "
                      f"without it (pass --compile-cache DIR to use another folder)",
                      stacklevel=2)
        _set(None, cc)
        return None
    _set(path, cc)
    return path


def _set(path: Path | None, cc) -> None:
    current = jax.config.jax_compilation_cache_dir
    if (str(path) if path else None) == current:
        return
    jax.config.update("jax_compilation_cache_dir", str(path) if path else None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.reset_cache()  # the cache object is created once; make it see the new folder
