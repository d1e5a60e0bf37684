"""What the learning-rate schedules of every experiment share: warm-up as a fraction of
the run (one unit across experiments, so a preset keeps its shape when --epochs changes)."""

from __future__ import annotations

from jaxhw.config import ConfigError


def warmup_steps(fraction: float, total_steps: int) -> int:
    """The first ``fraction`` of ``total_steps`` (rounded down).

    A fraction written as one epoch of a run (``1 / 22`` of 22 epochs) times the run's
    steps can land a hair under a whole number in floating point; the tolerance keeps
    that from losing a step."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"--warmup is a fraction of the steps, in [0, 1]; got {fraction}")
    return int(fraction * total_steps + 1e-6)
