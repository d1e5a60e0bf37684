import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxhw.train import CheckpointError, Checkpoints, open_run
from tests.conftest import write_image_split
from tests.tiny import tiny_dataset, tiny_trainer

ROOT = Path(__file__).resolve().parents[2]


def _state(seed=0):
    trainer = tiny_trainer()
    x, _ = tiny_dataset(4)
    return trainer, trainer.init_state(jax.random.key(seed), x[:1])


def test_round_trip(tmp_path):
    trainer, state = _state()
    x, y = tiny_dataset(64)
    state, _ = trainer.train_epoch(state, trainer.put(x, y), 16, jax.random.key(1))
    ckpt = Checkpoints(tmp_path / "run")
    ckpt.save(1, state, {"history": [{"epoch": 1}]}, metrics={"eval_accuracy": 0.5})
    _, template = _state(seed=7)  # different values, same structure
    restored, meta = Checkpoints(tmp_path / "run").restore(template)
    assert meta["history"] == [{"epoch": 1}]
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert int(restored.step) == 4


def test_keeps_the_last_two_and_the_best(tmp_path):
    _, state = _state()
    ckpt = Checkpoints(tmp_path / "run", keep_last=2)
    for epoch, acc in enumerate([0.5, 0.9, 0.6, 0.7, 0.65], start=1):
        ckpt.save(epoch, state, {}, metrics={"eval_accuracy": acc})
    assert ckpt.epochs() == [2, 4, 5]
    assert ckpt.best_epoch() == 2 and ckpt.latest_epoch() == 5
    assert ckpt.pick() == 5 and ckpt.pick("best") == 2 and ckpt.pick(4) == 4
    for wrong in (3, "last", True):
        with pytest.raises(CheckpointError, match="not kept.*'final', 'best'.*2, 4, 5"):
            ckpt.pick(wrong)


def test_open_run_rules(tmp_path):
    _, state = _state()
    with pytest.raises(CheckpointError, match="no checkpoint.*without --resume"):
        open_run(tmp_path / "run", resume=True, overwrite=False)
    open_run(tmp_path / "run", resume=False, overwrite=False).save(1, state, {}, {"eval_accuracy": 0})
    with pytest.raises(CheckpointError, match="already holds checkpoints.*--resume.*--overwrite"):
        open_run(tmp_path / "run", resume=False, overwrite=False)
    assert open_run(tmp_path / "run", resume=True, overwrite=False).latest_epoch() == 1
    assert open_run(tmp_path / "run", resume=False, overwrite=True).latest_epoch() is None
    with pytest.raises(CheckpointError, match="exclude"):
        open_run(tmp_path / "run", resume=True, overwrite=True)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    _, state = _state()
    Checkpoints(tmp_path / "run").save(3, state, {}, {"eval_accuracy": 0})
    for path in (tmp_path / "run" / "3" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"run/3 is damaged.*--resume continues from the epoch before it"):
        Checkpoints(tmp_path / "run").restore(state)


def test_missing_epoch_is_a_clear_error(tmp_path):
    _, state = _state()
    with pytest.raises(CheckpointError, match="no checkpoint for epoch 4"):
        Checkpoints(tmp_path / "run").restore(state, epoch=4)


def _cli(data: Path, ckpt: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.cifar_simple_cnn", "--data-dir", str(data),
            "--checkpoint-dir", str(ckpt), "--epochs", "6", "--print-every", "50", *extra]


def _curve(ckpt: Path) -> list[tuple]:
    history = json.loads((ckpt / "history.json").read_text())
    return [(r["epoch"], r["train_loss"], r["eval_loss"], r["eval_accuracy"]) for r in history]


def _epochs_done(ckpt: Path) -> int:
    return len(_curve(ckpt)) if (ckpt / "history.json").is_file() else 0


@pytest.mark.slow
def test_kill_9_then_resume_continues_the_same_curve(tmp_path):
    data = tmp_path / "data"
    write_image_split(data, "cifar10", "train", 2000, (32, 32, 3))
    write_image_split(data, "cifar10", "test", 200, (32, 32, 3), seed=1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    straight = tmp_path / "straight"
    subprocess.run(_cli(data, straight), cwd=ROOT, env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(data, killed), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait on history.json (written atomically after each epoch's checkpoint), not on the
    # checkpoint folder: orbax creates that folder before the epoch's history is written.
    deadline = time.time() + 120
    while _epochs_done(killed) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = len(_curve(killed))
    assert 2 <= done_before_kill < 6, "the run must be killed part-way"

    resumed = subprocess.run(_cli(data, killed, "--resume"), cwd=ROOT, env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    np.testing.assert_allclose(np.array(_curve(killed)), np.array(_curve(straight)), rtol=1e-6)


def test_unfinished_saves_are_removed_when_a_run_opens(tmp_path):
    from jaxhw.train.checkpoint import remove_unfinished_saves
    run = tmp_path / "run"
    leftover = run / "3.orbax-checkpoint-tmp-1700000000"
    (leftover / "state").mkdir(parents=True)
    (run / "notes").mkdir()
    Checkpoints(run)
    assert not leftover.exists() and (run / "notes").is_dir()
    assert remove_unfinished_saves(run) == []


@pytest.mark.slow
def test_a_missing_data_dir_is_one_error_line_and_no_thread_traceback(tmp_path):
    """Run the real command line several times: orbax's background cleanup used to race the
    interpreter's exit and print 'cannot schedule new futures after interpreter shutdown'."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for k in range(4):
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.cifar_simple_cnn", "--data-dir",
             str(tmp_path / "nonexistent"), "--checkpoint-dir", str(tmp_path / f"ckpt{k}")],
            capture_output=True, text=True, env=env, timeout=120,
            cwd=str(Path(__file__).resolve().parents[2]))
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr and "futures" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "does not exist" in errors[0]
