"""Two simulated CPU devices must give the loss curve of one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys, jax, optax
from jaxhw.train import make_mesh, steps
from tests.tiny import tiny_dataset, tiny_trainer
assert jax.device_count() == 2, jax.devices()
x, y = tiny_dataset(256)
make = tiny_trainer
if sys.argv[1] == "per_device":  # batch norms, no dropout; forced in float32 too
    from jaxhw.data.preprocess import Preprocess
    from jaxhw.models import BetterNet
    from jaxhw.models.cnn import conv_stem
    from jaxhw.train.loop import Trainer
    steps.per_device_gradients = lambda model, mesh: mesh.size > 1

    def make(mesh):
        return Trainer(BetterNet(stem=conv_stem(8), widths=(16, 16), blocks=(0, 1)),
                       optax.sgd(0.05, 0.9), mesh=mesh, steps_per_call=1,
                       preprocess=Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, pad=1, flip=True))
curves = {}
for n in (1, 2):
    trainer = make(make_mesh(jax.devices()[:n]))
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    losses = []
    for epoch in range(3):
        state, loss = trainer.train_epoch(state, data, 32, jax.random.key(epoch))
        losses.append(loss)
    leaf = jax.tree.leaves(state.params)[0]
    curves[n] = {"losses": losses, "eval": trainer.evaluate(state, data).loss,
                 "devices": len(leaf.sharding.device_set),
                 "stats": jax.tree.leaves(state.batch_stats)[0].tolist()}
print(json.dumps(curves))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["partitioned", "per_device"])
def test_two_devices_match_one(mode):
    """The step as jit partitions it, and (a BetterNet in float32) as per-device gradients
    under shard_map summed with psum and batch norms averaged over the devices, which
    16-bit steps on several devices use (``jaxhw.train.steps.per_device_gradients``)."""
    # Two simulated CPU devices, on a GPU machine too (JAX_PLATFORMS keeps JAX off the GPU).
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    curves = json.loads(out.strip().splitlines()[-1])
    one, two = curves["1"], curves["2"]
    assert one["devices"] == 1 and two["devices"] == 2
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["eval"], one["eval"], rtol=1e-5)
    np.testing.assert_allclose(two["stats"], one["stats"], rtol=1e-5, atol=1e-6)
