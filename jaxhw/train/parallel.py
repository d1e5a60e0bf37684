"""Data parallelism with ``jax.sharding``: one mesh axis ``data`` over all devices.

Parameters, optimizer state and the on-device dataset are replicated; each batch is split
along its first axis. ``jax.jit`` then partitions the step and inserts the gradient
all-reduce itself (with a 16-bit compute dtype on several devices the step sums float32
gradients under ``shard_map`` instead: ``jaxhw.train.steps.per_device_gradients``). One
device, several local devices and several hosts (after ``jax.distributed.initialize()``,
where ``jax.devices()`` lists every host's devices) run the same code.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxhw.config import ConfigError

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Split the leading (batch) axis over the ``data`` mesh axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree of host or device arrays on every device of ``mesh``.

    Every process must pass the same values (true for the datasets and for a state built
    from the same seed), which is what ``make_array_from_process_local_data`` needs for a
    fully replicated global array.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def to_global(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.make_array_from_process_local_data(
                sharding, np.asarray(jax.random.key_data(x)))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(to_global, tree)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ConfigError(f"batch size {batch_size} is not divisible by the {mesh.size} devices "
                         f"of the mesh; pick a multiple of {mesh.size}")
