"""On several devices, 16-bit training sums its gradients in float32.

XLA's partitioner all-reduces a weight gradient where its dot is computed, in the dot's
16-bit type; the train step instead differentiates per device under ``shard_map`` and sums
float32 gradients itself. Both tests run two simulated CPU devices in a subprocess, and
the HLO is read right after SPMD partitioning: XLA's CPU backend widens 16-bit all-reduces
later, which a GPU's NCCL does not.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# A small BetterNet (batch norms, no dropout) on the tiny dataset's 8x8 images.
SETUP = """
import json, sys
import jax, jax.numpy as jnp, optax
from jaxhw.data.preprocess import Preprocess
from jaxhw.models import BetterNet
from jaxhw.models.cnn import conv_stem
from jaxhw.train import make_mesh, steps
from jaxhw.train.loop import Trainer
from tests.tiny import tiny_dataset
assert jax.device_count() == 2, jax.devices()

def trainer(devices, dtype):
    model = BetterNet(stem=conv_stem(8), widths=(16, 16), blocks=(0, 1), dtype=jnp.dtype(dtype))
    return Trainer(model, optax.sgd(0.05, 0.9), mesh=make_mesh(jax.devices()[:devices]),
                   steps_per_call=1, loss_scaling=dtype == "float16",
                   preprocess=Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, pad=1, flip=True))
"""

COMPILE = SETUP + """
dtype, partitioner = sys.argv[1], sys.argv[2] == "partitioner"
if partitioner:  # the step as XLA's partitioner alone would build it
    steps.per_device_gradients = lambda model, mesh: False
tr = trainer(2, dtype)
x, y = tiny_dataset(64)
state = tr.init_state(jax.random.key(0), x[:1])
tr.block_fn(1).lower(state, tr.put(x, y), jnp.arange(32).reshape(2, 16), jnp.int32(0),
                     jnp.int32(1)).compile()
"""

TRAIN = SETUP + """
steps.per_device_gradients = lambda model, mesh: mesh.size > 1  # also in float32
x, y = tiny_dataset(256)
curves = {}
for n in (1, 2):
    tr = trainer(n, "float32")
    data = tr.put(x, y)
    state = tr.init_state(jax.random.key(0), x[:1])
    losses = []
    for epoch in range(2):
        state, loss = tr.train_epoch(state, data, 32, jax.random.key(epoch))
        losses.append(loss)
    curves[n] = {"losses": losses, "eval": tr.evaluate(state, data).loss,
                 "mean": jax.tree.leaves(state.batch_stats)[0].tolist()}
print(json.dumps(curves))
"""


def _run(script: str, *args: str, dump: Path | None = None) -> str:
    flags = "--xla_force_host_platform_device_count=2"
    if dump:
        flags += f" --xla_dump_to={dump} --xla_dump_hlo_pass_re=spmd-partitioning"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def all_reduce_types(dtype: str, mode: str, tmp_path: Path) -> dict[str, int]:
    """The element types of the all-reduces of the partitioned train step -> their count."""
    dump = tmp_path / f"{dtype}-{mode}"
    _run(COMPILE, dtype, mode, dump=dump)
    (hlo,) = dump.glob("*jit_steps*after_spmd-partitioning*")
    types = re.findall(r"= (\w+)\[[\d,]*\]\S* all-reduce\(", hlo.read_text())
    return {t: types.count(t) for t in set(types)}


@pytest.mark.parametrize("dtype", ["bfloat16", pytest.param("float16", marks=pytest.mark.slow)])
def test_sixteen_bit_steps_sum_gradients_in_float32(dtype, tmp_path):
    kept = all_reduce_types(dtype, "per_device", tmp_path)
    assert kept.get("f32", 0) > 0 and set(kept) == {"f32"}, kept
    # what the partitioner alone does: the weight gradients summed in 16 bits
    short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    assert all_reduce_types(dtype, "partitioner", tmp_path).get(short, 0) > 0


@pytest.mark.slow
def test_per_device_gradients_train_as_one_device():
    # float32, no dropout: summed gradients and synchronised batch norms give one device's run
    curves = json.loads(_run(TRAIN).strip().splitlines()[-1])
    one, two = curves["1"], curves["2"]
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["eval"], one["eval"], rtol=1e-5)
    np.testing.assert_allclose(two["mean"], one["mean"], rtol=1e-5, atol=1e-6)
