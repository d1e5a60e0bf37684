"""On several devices, 16-bit training sums its gradients in float32.

XLA's partitioner all-reduces a weight gradient where its dot is computed, in the dot's
16-bit type; the train step instead differentiates per device under ``shard_map`` and sums
float32 gradients itself. The tests compile on two simulated CPU devices in a subprocess
and read the HLO right after SPMD partitioning: XLA's CPU backend widens 16-bit
all-reduces later, which a GPU's NCCL does not. (``tests/train/test_parallel.py`` trains
the per-device step against one device.)
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A bfloat16 or float16 train step of a small BetterNet (batch norms), compiled on two
# devices as the engine builds it, or ("partitioner") as XLA's partitioner alone would.
SCRIPT = """
import sys
import jax, jax.numpy as jnp, optax
from jaxhw.data.preprocess import Preprocess
from jaxhw.models import BetterNet
from jaxhw.models.cnn import conv_stem
from jaxhw.train import make_mesh, steps
from jaxhw.train.loop import Trainer
from tests.tiny import tiny_dataset
assert jax.device_count() == 2, jax.devices()
dtype, mode = sys.argv[1], sys.argv[2]
if mode == "partitioner":
    steps.per_device_gradients = lambda model, mesh: False
model = BetterNet(stem=conv_stem(8), widths=(16, 16), blocks=(0, 1), dtype=jnp.dtype(dtype))
tr = Trainer(model, optax.sgd(0.05, 0.9), mesh=make_mesh(), steps_per_call=1,
             loss_scaling=dtype == "float16",
             preprocess=Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, pad=1, flip=True))
x, y = tiny_dataset(64)
state = tr.init_state(jax.random.key(0), x[:1])
tr.block_fn(1).lower(state, tr.put(x, y), jnp.arange(32).reshape(2, 16), jnp.int32(0),
                     jnp.int32(1)).compile()
"""


def all_reduce_types(dtype: str, mode: str, tmp_path: Path) -> dict[str, int]:
    """The element types of the all-reduces of the partitioned train step -> their count."""
    dump = tmp_path / f"{dtype}-{mode}"
    flags = ("--xla_force_host_platform_device_count=2 "
             f"--xla_dump_to={dump} --xla_dump_hlo_pass_re=spmd-partitioning")
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", SCRIPT, dtype, mode], cwd=ROOT, env=env, check=True,
                   capture_output=True, text=True)
    (hlo,) = dump.glob("*jit_steps*after_spmd-partitioning*")
    types = re.findall(r"= (\w+)\[[\d,]*\]\S* all-reduce\(", hlo.read_text())
    return {t: types.count(t) for t in set(types)}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_sixteen_bit_steps_sum_gradients_in_float32(dtype, tmp_path):
    kept = all_reduce_types(dtype, "per_device", tmp_path)
    assert kept.get("f32", 0) > 0 and set(kept) == {"f32"}, kept
    # what the partitioner alone does: the weight gradients summed in 16 bits
    short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    assert all_reduce_types(dtype, "partitioner", tmp_path).get(short, 0) > 0
