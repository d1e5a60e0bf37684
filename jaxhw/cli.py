"""What every experiment's command line shares: clean errors and interruption messages."""

from __future__ import annotations

import sys
from typing import Callable

from jaxhw.config import ConfigError
from jaxhw.data.sources import DataError
from jaxhw.pretrained import ModelLoadError
from jaxhw.train.checkpoint import CheckpointError


def run(main: Callable[[], None]) -> None:
    """Run an experiment's ``main``: user errors become one line on stderr and exit code 2;
    Ctrl-C says how to resume (checkpoints are written at the end of every epoch)."""
    try:
        main()
    except (ConfigError, DataError, CheckpointError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: the last finished epoch is checkpointed; rerun the same command "
              "with --resume to continue", file=sys.stderr)
        sys.exit(130)
