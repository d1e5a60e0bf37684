"""What every experiment's command line shares: one-line errors with their exit statuses,
and the interruption message.

Exit statuses: 0 done; 2 a bad flag, missing or damaged data, a damaged or busy run folder;
3 the run diverged (a non-finite loss; the last finite epoch's checkpoint is kept); 4 a
write failed (no space, no permission; the earlier checkpoints are kept); 130 Ctrl-C.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

from jaxhw.config import ConfigError
from jaxhw.data.sources import DataError
from jaxhw.files import OptionalWriteWarning, RunFileError, WriteError
from jaxhw.pretrained import ModelLoadError
from jaxhw.train.checkpoint import CheckpointError
from jaxhw.train.divergence import EXIT_DIVERGED, Diverged, SeedsDiverged

EXIT_USAGE, EXIT_WRITE, EXIT_INTERRUPTED = 2, 4, 130
USAGE_ERRORS = (ConfigError, DataError, CheckpointError, ModelLoadError, RunFileError)
DIVERGED = (Diverged, SeedsDiverged)
USER_ERRORS = (*USAGE_ERRORS, *DIVERGED, WriteError)  # one line each, never a traceback


def one_line(error: BaseException) -> str:
    """The line the command line prints for one of :data:`USER_ERRORS`."""
    return str(error) if isinstance(error, DIVERGED) else f"error: {error}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings of jaxhw's own (an optional file not written) as one line; others as
    Python shows them."""
    if issubclass(category, OptionalWriteWarning):
        print(f"warning: {message}", file=sys.stderr if file is None else file)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def run(main: Callable[[], None]) -> None:
    """Run an experiment's ``main``: user errors become one line on stderr and exit code 2,
    a diverged run exit code 3, a failed write exit code 4; Ctrl-C says how to resume
    (checkpoints are written at the end of every epoch)."""
    warnings.showwarning = _show_warning
    try:
        main()
    except USER_ERRORS as e:
        print(one_line(e), file=sys.stderr)
        sys.exit(EXIT_DIVERGED if isinstance(e, DIVERGED) else
                 EXIT_WRITE if isinstance(e, WriteError) else EXIT_USAGE)
    except KeyboardInterrupt:
        print("\ninterrupted: the last finished epoch is checkpointed; rerun the same command "
              "with --resume to continue", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
