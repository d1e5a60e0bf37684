"""Several hosts for real: two processes joined by ``jax.distributed`` (a localhost
coordinator, CPU collectives) train together like one process with the same global batch,
and the checkpoints they write restore in a single process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# argv: mode ("single" | process id), port, the pair's run folder. Each trains through the
# experiment runner; "single" trains in <folder>_single. Prints one JSON line.
WORKER = """
import json, sys
import jax
mode, port, ckpt_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode != "single":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(mode),
                               initialization_timeout=60)
from jaxhw.experiment import Images, RunConfig, image_plan, train_and_evaluate
from jaxhw.train import Checkpoints
from tests.tiny import tiny_dataset, tiny_trainer
x, y = tiny_dataset(128)
trainer = tiny_trainer()           # mesh: every device of every process
plan = image_plan("multihost", trainer, Images(x, y, x, y, ("red", "green", "blue")),
                  epochs=3, batch_size=16)
folder = ckpt_dir if mode != "single" else ckpt_dir + "_single"
history = train_and_evaluate("multihost", RunConfig(checkpoint_dir=folder,
                                                    compile_cache="off"), plan)["history"]
out = {"devices": jax.device_count(), "processes": jax.process_count(),
       "losses": [r["train_loss"] for r in history],
       "eval": [r["eval_loss"] for r in history]}
if mode == "single":   # restore what the pair wrote
    restored, meta = Checkpoints(ckpt_dir).restore(plan.init_state(0))
    out["restored_epoch"] = meta["epoch"]
    out["restored_eval"] = trainer.evaluate(restored, plan.test).loss
print("RESULT " + json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _result(stdout: str) -> dict:
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, stdout[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    port, ckpt = _free_port(), str(tmp_path / "ckpt")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), ckpt],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    pair = [_result(o) for o in outs]
    assert all(r["processes"] == 2 and r["devices"] == 2 for r in pair)
    assert pair[0]["losses"] == pair[1]["losses"]       # both hosts see the same global step

    single = subprocess.run([sys.executable, "-c", WORKER, "single", "0", ckpt], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-3000:]
    one = _result(single.stdout)
    assert one["processes"] == 1 and one["devices"] == 1
    np.testing.assert_allclose(pair[0]["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(pair[0]["eval"], one["eval"], rtol=1e-5)
    # The pair's checkpoints restore in one process, to the pair's final model.
    assert one["restored_epoch"] == 3
    np.testing.assert_allclose(one["restored_eval"], pair[0]["eval"][-1], rtol=1e-5)
