"""Where a notebook keeps what it makes: the local folders, or Google Drive on Colab.

A Colab runtime reset wipes ``/content`` and ``/root``: checkpoints, results, the
compilation cache and the tokenizer cache with them. With ``drive=True`` they go to
``MyDrive/jaxhw`` on the user's Google Drive instead, so a notebook re-run after a
disconnect (its training cells pass ``--resume auto``) continues where it stopped.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import NamedTuple

DRIVE_MOUNT = "/content/drive"


class Storage(NamedTuple):
    checkpoints: str        # the folder holding every run folder
    engine_args: list[str]  # flags every experiment gets (the compilation cache)


def storage(drive: bool, checkpoints: str = "checkpoints", mount: str = DRIVE_MOUNT
            ) -> Storage:
    """The run folders and engine flags of a notebook: ``checkpoints`` and the default
    compilation cache, or with ``drive`` (Colab only) Google Drive mounted at ``mount``
    and ``MyDrive/jaxhw/{checkpoints,compile_cache,cache}`` on it (the last one for
    tokenised reviews, through ``JAXHW_CACHE_DIR``)."""
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
    print(f"keeping checkpoints, results and caches in {root} (Google Drive)")
    return Storage(str(root / "checkpoints"), ["--compile-cache", str(root / "compile_cache")])
