"""Files of a run folder: written whole or not at all, read back with errors that name them.

A write that fails (a full disk, a file-size limit, no permission) raises :class:`WriteError`
and a damaged file :class:`RunFileError`, each one line naming the file and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable


class RunFileError(RuntimeError):
    """A file of a run folder is missing or damaged; the message names it and what to do."""


class WriteError(RuntimeError):
    """A run could not write a file (no space, a size limit, no permission); the message
    names the folder and the cause."""


def os_cause(error: BaseException) -> str:
    """The operating system's words for ``error`` ("No space left on device", ...), also
    when a library (tensorstore, behind orbax) reports it as ``[os_error_code='28']``."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    found = re.search(r"os_error_code='?(\d+)", str(error))
    if found:
        return os.strerror(int(found.group(1)))
    return f"{type(error).__name__}: {str(error)[:160]}"


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix, so ``np.savez``
    keeps the name; one per process), then rename it to ``path``: a reader never sees half
    a file, even after kill -9. A failed write leaves ``path`` as it was and raises
    :class:`WriteError`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write {path} ({os_cause(e)}); free space or choose "
                         f"another folder") from None


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in ``path``; an unreadable or damaged file is a :class:`RunFileError`
    naming it, with ``fix`` (what the user can do) after it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        cause = os_cause(e) if isinstance(e, OSError) else f"not valid JSON: {e}"
        raise RunFileError(f"{path} is damaged ({cause}); {fix}") from None


def check_writable(folder: str | os.PathLike) -> None:
    """Raise :class:`WriteError` unless a file can be created in ``folder`` (or, when it
    does not exist yet, in the nearest folder above it that does): found before training
    starts, not at the first checkpoint. Creates nothing that stays."""
    place = Path(folder).expanduser().absolute()
    try:
        while True:
            try:
                place.stat()
                break
            except (FileNotFoundError, NotADirectoryError):
                if place == place.parent:
                    raise
                place = place.parent
        if not place.is_dir():
            raise WriteError(f"cannot write to {folder}: {place} is not a folder; choose "
                             f"another --checkpoint-dir")
        with tempfile.TemporaryFile(dir=place, prefix=".jaxhw-write-check-"):
            pass
    except OSError as e:
        hint = ("fix its permissions or choose another --checkpoint-dir"
                if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "choose another --checkpoint-dir")
        raise WriteError(f"cannot write to {folder} ({os_cause(e)} in {place}); {hint}") from None


class OptionalWriteWarning(UserWarning):
    """A file a run can do without (a plot, TensorBoard events, a cache) was not written."""


def optional_write(what: str, write: Callable[..., Any], *args: Any) -> bool:
    """``write(*args)`` for ``what``, a file the run can do without (a plot, TensorBoard
    events, a cache); a failure is one :class:`OptionalWriteWarning` naming it and the
    cause, and the run goes on. Returns whether it was written."""
    try:
        write(*args)
    except (OSError, WriteError) as e:
        cause = os_cause(e) if isinstance(e, OSError) else str(e)
        warnings.warn(f"could not write {what} ({cause}); the run goes on without it",
                      OptionalWriteWarning, stacklevel=2)
        return False
    return True
