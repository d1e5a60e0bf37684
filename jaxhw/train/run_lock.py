"""One run per folder: a lock beside the run folder, held from before ``--overwrite`` clears
it until the run's last write.

The lock is ``filelock``'s (``flock`` on Linux and macOS): the operating system drops it when
its process ends, so a lock left by a killed run never blocks the next one. Where a file
system has no ``flock``, filelock falls back to a marker file holding the owner's process id.
Either way the lock is only as wide as the file system's locking: on a local disk it keeps
out every other process on the machine; on a network or FUSE mount shared by several
machines (Google Drive in Colab, NFS) it keeps out the processes of one machine, not those of
another runtime using the same folder. With several hosts, process 0 holds it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import filelock
import jax

from jaxhw.files import WriteError, os_cause
from jaxhw.train.checkpoint import CheckpointError


class FolderBusy(CheckpointError):
    """Another process is training in the run folder."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of the run folder ``folder``: ``.<name>.lock`` beside it, so that
    ``--overwrite`` can delete the folder while the lock is held."""
    folder = Path(folder).expanduser().absolute()
    return folder.parent / f".{folder.name}.lock"


def _owner() -> str:
    command = " ".join(Path(a).name if k == 0 else a for k, a in enumerate(sys.argv))[:200]
    return (f"process {os.getpid()} on {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}")


def _write_owner(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (_owner() + "\n").encode(), 0)


class RunLock:
    """The lock of the run folder ``folder`` (a context manager). :meth:`acquire` raises
    :class:`FolderBusy`, naming the process that holds it, instead of waiting."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser().absolute()
        self.path = lock_path(self.folder)
        self.primary = jax.process_index() == 0
        self._lock = filelock.FileLock(str(self.path), timeout=0, on_acquired=_write_owner)

    def acquire(self) -> "RunLock":
        if not self.primary:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except filelock.Timeout:  # before OSError: it is a TimeoutError
            try:
                holder = self.path.read_text().strip() or "another process"
            except OSError:
                holder = "another process"
            raise FolderBusy(f"{self.folder} is in use by {holder}; wait for that run to "
                             f"end, or choose another --checkpoint-dir") from None
        except OSError as e:
            raise WriteError(f"cannot create the lock {self.path} of run folder "
                             f"{self.folder} ({os_cause(e)}); choose another "
                             f"--checkpoint-dir") from None
        return self

    def release(self) -> None:
        if self.primary and self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(folder: str | os.PathLike) -> None:
    """Raise :class:`FolderBusy` when another process trains in ``folder`` (taken and
    released at once: the check an experiment makes before loading its data)."""
    with RunLock(folder):
        pass
