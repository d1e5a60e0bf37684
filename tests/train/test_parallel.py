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
import json, jax
from jaxhw.train import make_mesh
from tests.tiny import tiny_dataset, tiny_trainer
assert jax.device_count() == 2, jax.devices()
x, y = tiny_dataset(256)
curves = {}
for n in (1, 2):
    trainer = tiny_trainer(make_mesh(jax.devices()[:n]))
    data = trainer.put(x, y)
    state = trainer.init_state(jax.random.key(0), x[:1])
    losses = []
    for epoch in range(3):
        state, loss = trainer.train_epoch(state, data, 32, jax.random.key(epoch))
        losses.append(loss)
    leaf = jax.tree.leaves(state.params)[0]
    curves[n] = {"losses": losses, "eval": trainer.evaluate(state, data).loss,
                 "devices": len(leaf.sharding.device_set)}
print(json.dumps(curves))
"""


@pytest.mark.slow
def test_two_devices_match_one():
    # Two simulated CPU devices, on a GPU machine too (JAX_PLATFORMS keeps JAX off the GPU).
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    curves = json.loads(out.strip().splitlines()[-1])
    one, two = curves["1"], curves["2"]
    assert one["devices"] == 1 and two["devices"] == 2
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["eval"], one["eval"], rtol=1e-5)
