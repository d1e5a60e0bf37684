"""Layer implementations the models can be given (Flax style: ``conv=partial(nn.Conv, ...)``,
``max_pool=``).

:func:`layers` turns an experiment's ``--conv auto|fast|lax`` into the convolution and max
pooling to build a CNN with: jaxhw's CPU versions (:mod:`jaxhw.ops.conv`,
:mod:`jaxhw.ops.pool`) or ``lax`` / flax's (cuDNN on a GPU). ``auto`` is the one place that
asks whether training runs on a CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
from jax import lax

from jaxhw.ops.conv import conv_general_dilated
from jaxhw.ops.pool import max_pool

CHOICES = ("auto", "fast", "lax")


@dataclasses.dataclass(frozen=True)
class Layers:
    """The convolution (``lax.conv_general_dilated``'s signature) and max pooling
    (``flax.linen.max_pool``'s) for a CNN, and whether they are jaxhw's CPU versions."""

    conv: Callable
    max_pool: Callable
    fast: bool

    @property
    def conv_module(self) -> Callable[..., nn.Conv]:
        """``nn.Conv`` computed by :attr:`conv`, for a CNN's ``conv=``."""
        return functools.partial(nn.Conv, conv_general_dilated=self.conv)


def layers(choice: str = "auto", backend: str | None = None) -> Layers:
    """``auto``: jaxhw's CPU versions when the backend (default: JAX's default backend) is
    the CPU, ``lax`` and flax's elsewhere; ``fast`` or ``lax``: that one everywhere."""
    if choice not in CHOICES:
        raise ValueError(f"unknown convolution choice {choice!r}; choose one of {CHOICES}")
    fast = (backend or jax.default_backend()) == "cpu" if choice == "auto" else choice == "fast"
    if fast:
        return Layers(conv_general_dilated, max_pool, True)
    return Layers(lax.conv_general_dilated, nn.max_pool, False)


__all__ = ["CHOICES", "Layers", "conv_general_dilated", "layers", "max_pool"]
