"""Where a notebook keeps what it makes: the local folders, or Google Drive on Colab.

A Colab runtime reset wipes ``/content`` and ``/root``: checkpoints, results, the
compilation cache and the tokenizer cache with them. With ``drive=True`` they go to
``MyDrive/jaxhw`` on the user's Google Drive instead, so a notebook re-run after a
disconnect (its training cells pass ``--resume auto``) continues where it stopped. The
compilation cache (and XLA's autotuning cache inside it: many small files) stays on the
local disk while cells run; it starts from Drive's copy, and the files it gains are
copied to Drive after every cell.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, NamedTuple

DRIVE_MOUNT = "/content/drive"
LOCAL_CACHE = "/content/jaxhw_compile_cache"  # Colab's local disk


class Storage(NamedTuple):
    checkpoints: str        # the folder holding every run folder
    engine_args: list[str]  # flags every experiment gets (the compilation cache)


def storage(drive: bool, checkpoints: str = "checkpoints", mount: str = DRIVE_MOUNT,
            local_cache: str = LOCAL_CACHE) -> Storage:
    """The run folders and engine flags of a notebook: ``checkpoints`` and the default
    compilation cache, or with ``drive`` (Colab only) Google Drive mounted at ``mount``,
    ``MyDrive/jaxhw/{checkpoints,cache}`` on it (the last one for tokenised reviews,
    through ``JAXHW_CACHE_DIR``) and the compilation cache in ``local_cache``, kept in
    step with ``MyDrive/jaxhw/compile_cache`` (:func:`copy_new`, after every cell)."""
    if not drive:
        return Storage(checkpoints, [])
    try:
        colab_drive = importlib.import_module("google.colab.drive")
    except ImportError:
        raise RuntimeError("DRIVE = True needs a Google Colab runtime (google.colab); "
                           "elsewhere set DRIVE = False and CHECKPOINTS to a folder "
                           "that lasts") from None
    colab_drive.mount(mount)
    root = Path(mount) / "MyDrive" / "jaxhw"
    for sub in ("checkpoints", "compile_cache", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.environ["JAXHW_CACHE_DIR"] = str(root / "cache")
    local = Path(local_cache).expanduser()
    copied = copy_new(root / "compile_cache", local)
    after_each_cell(lambda: copy_new(local, root / "compile_cache"))
    print(f"keeping checkpoints, results and caches in {root} (Google Drive); compiling "
          f"into {local} ({copied} cached programs from Drive), copied to Drive after "
          f"every cell")
    return Storage(str(root / "checkpoints"), ["--compile-cache", str(local)])


def copy_new(source: Path, target: Path) -> int:
    """Copy the files under ``source`` that ``target`` lacks (a cache's entries never
    change once written), each through a temporary name; returns how many."""
    copied = 0
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        dest = target / path.relative_to(source)
        if path.is_file() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(dest.name + ".partial")
            shutil.copy2(path, partial)
            os.replace(partial, dest)
            copied += 1
    return copied


def _shell():
    """The IPython shell this runs in, or None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def one_line_errors() -> bool:
    """In the IPython kernel this runs in, show jaxhw's own errors (a bad flag, missing
    data, a diverged run, a failed write, a busy or damaged run folder) as the one line the
    command line prints, instead of a traceback; other errors keep theirs. False outside
    IPython."""
    shell = _shell()
    if shell is None:
        return False
    from jaxhw.cli import USER_ERRORS, one_line

    def show(shell, etype, value, tb, tb_offset=None):
        print(one_line(value), file=sys.stderr)

    shell.set_custom_exc(USER_ERRORS, show)
    return True


def after_each_cell(action: Callable[[], object]) -> bool:
    """Run ``action`` after every cell of the IPython kernel this runs in (replacing the
    one registered before, so that running the storage cell again adds none); False
    outside IPython."""
    shell = _shell()
    if shell is None:
        return False
    for hook in list(shell.events.callbacks.get("post_run_cell", [])):
        if getattr(hook, "jaxhw_sync", False):
            shell.events.unregister("post_run_cell", hook)

    def hook(result=None):
        action()

    hook.jaxhw_sync = True
    shell.events.register("post_run_cell", hook)
    return True
