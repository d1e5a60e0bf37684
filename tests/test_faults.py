"""Faults around a run: a diverging loss, two runs on one folder, failed writes, damaged run
folders. Each ends in one line naming what happened and what to do, and loses no finished
epoch. Real faults only: NaN losses from NaN data, EFBIG from RLIMIT_FSIZE, EACCES from a
process that has dropped root, flock held by another process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import jaxhw
from jaxhw import cli
from jaxhw.files import (OptionalWriteWarning, RunFileError, WriteError, check_writable,
                         optional_write, read_json)
from jaxhw.predict import RunFolderError
from jaxhw.train.checkpoint import CheckpointError, Checkpoints
from jaxhw.train.divergence import EXIT_DIVERGED, Diverged
from jaxhw.train.run_lock import FolderBusy, RunLock, check_free, lock_path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, **kwargs)


def _fault_run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.fault_run", str(folder), *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


TQDM = re.compile(r"\d+/\d+ \[[^]]*\]$")  # a progress bar's state (erased when it closes)


def _lines(stderr: str) -> list[str]:
    """The lines a user reads in ``stderr``, beside the progress bars."""
    lines = [line.strip() for line in re.split(r"[\r\n]", stderr)]
    assert "Traceback" not in stderr, stderr
    return [line for line in lines if line and not TQDM.search(line)]


def _one_line(stderr: str) -> str:
    lines = _lines(stderr)
    assert len(lines) == 1, stderr
    return lines[0]


# ------------------------------------------------------------------ diverging runs
def test_the_divergence_line_says_where_what_to_try_and_what_is_kept():
    e = Diverged("the train loss", float("nan"), 1234, 3, 14)
    e.completed(2.5e6, 2)
    line = str(e)
    assert line.startswith("diverged: the train loss is nan at step 1234 (epoch 3 of 14, "
                           "learning rate 2.5e+06)")
    assert "--lr" in line and "--on-nan continue" in line
    assert "the checkpoint of epoch 2 is kept" in line and "--resume" in line
    assert "no checkpoint is kept" in str(Diverged("the test loss", float("inf"), 8, 1, 2)
                                          .completed(None, None))
    assert e.record()["kept_epoch"] == 2 and e.record()["step"] == 1234


def test_a_nonfinite_loss_stops_the_epoch_at_its_first_host_read():
    """A NaN train loss raises :class:`Diverged` naming its step and epoch (the runner then
    keeps the last finite epoch's checkpoint: the slow test below); ``on_nan="continue"``
    trains on."""
    import jax
    import jax.numpy as jnp
    from tests.tiny import tiny_dataset, tiny_trainer
    x, y = tiny_dataset(32)
    x = x.astype(np.float32)  # NaN needs a float; one dtype keeps one program
    trainer = tiny_trainer()
    state = trainer.init_state(jax.random.key(0), x[:1])
    data = trainer.put(x, y)
    poisoned = {**data, "x": data["x"] * jnp.nan}
    state, _ = trainer.train_epoch(state, data, 8, jax.random.key(1), progress=False)
    with pytest.raises(Diverged) as caught:
        trainer.train_epoch(state, poisoned, 8, jax.random.key(2), epoch=2, epochs=2,
                            progress=False)
    assert (caught.value.step, caught.value.epoch) == (5, 2)  # the first step of epoch 2
    go_on = tiny_trainer(on_nan="continue")
    _, loss = go_on.train_epoch(go_on.init_state(jax.random.key(0), x[:1]), poisoned, 8,
                                jax.random.key(1), progress=False)
    assert np.isnan(loss)


@pytest.mark.slow
def test_a_late_nan_stops_the_run_and_resume_continues_from_the_last_finite_epoch(tmp_path):
    folder = tmp_path / "run"
    stopped = _fault_run(folder, "--nan-after", "2")
    assert stopped.returncode == EXIT_DIVERGED
    line = _one_line(stopped.stderr)
    assert line.startswith("diverged: the train loss is nan at step 17 (epoch 3 of 3, "
                           "learning rate 0.05)")
    assert line.endswith("the checkpoint of epoch 2 is kept: rerun with the change and "
                         "--resume to continue from it")
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "diverged" and results["diverged"]["kept_epoch"] == 2
    assert not (folder / "3").exists() and (folder / "2").is_dir()
    assert not (folder / "history.png").exists()
    check_free(folder)  # the lock went with the run

    with pytest.raises(RunFolderError, match="diverged .step 17, epoch 3"):
        jaxhw.load(folder)
    evaluate = _python("from jaxhw import cli; from experiments import cifar_simple_cnn as m; "
                       "import sys; cli.run(lambda: m.main(sys.argv[1:]))",
                       "--checkpoint-dir", str(folder), "--evaluate")
    assert evaluate.returncode == 2 and "diverged (step 17, epoch 3)" in _one_line(
        evaluate.stderr)

    resumed = _fault_run(folder, "--resume", "yes")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at epoch 2" in resumed.stdout
    results = json.loads((folder / "results.json").read_text())
    assert "status" not in results and [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert np.isfinite(results["history"][-1]["train_loss"])
    assert Checkpoints(folder).latest_epoch() == 3


@pytest.mark.slow
def test_a_diverged_seed_is_reported_and_the_others_go_on(tmp_path):
    folder = tmp_path / "seeds"
    run = _fault_run(folder, "--seeds", "2", "--nan-after", "1", "--nan-seed", "0")
    assert run.returncode == EXIT_DIVERGED
    assert _one_line(run.stderr).startswith("diverged: seed 0 of 2")
    assert "seed 0: diverged: the train loss is nan at step 9 (epoch 2 of 3" in run.stdout
    summary = json.loads((folder / "results.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [1]
    assert [d["seed"] for d in summary["diverged"]] == [0]
    assert summary["mean_accuracy"] == summary["seeds"][0]["accuracy"]


@pytest.mark.slow
def test_a_huge_learning_rate_ends_the_command_with_its_exit_status(tiny_data, tmp_path):
    folder = tmp_path / "cnn"
    run = subprocess.run([sys.executable, "-m", "experiments.cifar_simple_cnn", "--lr", "1e6",
                          "--data-dir", str(tiny_data), "--checkpoint-dir", str(folder),
                          "--compile-cache", "off"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == EXIT_DIVERGED, run.stderr
    line = _one_line(run.stderr)
    assert line.startswith("diverged: the train loss is ") and "epoch 1 of 2" in line
    assert "learning rate 1e+06" in line and "no checkpoint is kept" in line
    assert "Accuracy of the network" not in run.stdout
    assert "WARNING" not in run.stderr  # no tensorboard NaN warning per host read


# ------------------------------------------------------------------ one run per folder
HOLD = ("import sys, time; from jaxhw.train.run_lock import RunLock; "
        "held = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_busy_folder_is_one_line_and_clears_nothing(tmp_path, capsys):
    from experiments import cifar_simple_cnn
    folder = tmp_path / "run"
    (folder / "1").mkdir(parents=True)
    (folder / "history.json").write_text("[]")
    holder = _holder(folder)
    try:
        with pytest.raises(FolderBusy, match=f"in use by process {holder.pid} on "):
            RunLock(folder).acquire()
        with pytest.raises(SystemExit) as exit_:
            cli.run(lambda: cifar_simple_cnn.main(["--checkpoint-dir", str(folder),
                                                   "--overwrite",
                                                   "--data-dir", str(tmp_path / "none")]))
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {folder} is in use by process {holder.pid}")
        assert "\n" not in err
        assert (folder / "history.json").is_file() and (folder / "1").is_dir()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(folder).exists()  # left behind, and still no obstacle
    with RunLock(folder) as lock:
        assert lock.path.read_text().startswith(f"process {os.getpid()} on ")
    check_free(folder)


def test_the_lock_is_released_when_the_run_raises(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        with RunLock(folder):
            1 / 0
    probe = _python("import sys; from jaxhw.train.run_lock import check_free; "
                    "check_free(sys.argv[1]); print('free')", str(folder))
    assert probe.stdout.strip() == "free", probe.stderr


@pytest.mark.slow
def test_a_second_command_beside_a_training_run_is_refused(tiny_data, tmp_path):
    folder = tmp_path / "cnn"
    first = subprocess.Popen([sys.executable, "-m", "experiments.cifar_simple_cnn",
                              "--epochs", "200", "--data-dir", str(tiny_data),
                              "--checkpoint-dir", str(folder), "--compile-cache", "off"],
                             cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (folder / "history.json").is_file() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "experiments.cifar_simple_cnn",
                                 "--overwrite", "--data-dir", str(tiny_data),
                                 "--checkpoint-dir", str(folder), "--compile-cache", "off"],
                                cwd=ROOT, env=ENV, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2
        assert f"is in use by process {first.pid} on " in _one_line(second.stderr)
        assert "cifar_simple_cnn.py --epochs 200" in second.stderr
        assert first.poll() is None and (folder / "1").is_dir()  # untouched, still training
    finally:
        first.kill()
        first.wait()


# ------------------------------------------------------------------ failed writes
SAVE_THEN_FAIL = """
import resource, signal, sys
import jax.numpy as jnp
import numpy as np
from jaxhw.files import WriteError
from jaxhw.train.checkpoint import Checkpoints
ckpt = Checkpoints(sys.argv[1], best_metric=None)
state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)}
ckpt.save(1, state, {"epoch": 1})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
try:
    ckpt.save(2, state, {"epoch": 2})
except WriteError as e:
    print(e)
"""


def test_a_checkpoint_write_that_fails_is_one_line_and_keeps_the_earlier_epoch(tmp_path):
    folder = tmp_path / "run"
    out = _python(SAVE_THEN_FAIL, str(folder))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"could not write the checkpoint of epoch 2 to {folder} "
                                  f"(File too large); the checkpoint of epoch 1 is kept: free "
                                  f"space or choose another --checkpoint-dir, then rerun with "
                                  f"--resume")
    assert "Traceback" not in out.stderr and "ERROR" not in out.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["1"]  # the partial save is gone
    state, meta = Checkpoints(folder).restore(None)
    assert meta["epoch"] == 1 and state["w"].shape == (64, 64)


@pytest.mark.slow
def test_a_run_whose_disk_fills_mid_run_stops_with_one_line_and_resumes(tmp_path):
    folder = tmp_path / "run"
    run = _fault_run(folder, "--fsize-limit-after", "1")
    assert run.returncode == cli.EXIT_WRITE
    warning, error = _lines(run.stderr)  # the events' flush after epoch 1 failed first
    assert warning == (f"warning: could not write the TensorBoard events in "
                       f"{folder / 'tensorboard'} (File too large); the run goes on without it")
    assert error == (
        f"error: could not write the checkpoint of epoch 2 to {folder} (File too large); the "
        f"checkpoint of epoch 1 is kept: free space or choose another --checkpoint-dir, then "
        f"rerun with --resume")
    resumed = _fault_run(folder, "--resume", "yes")
    assert resumed.returncode == 0, resumed.stderr
    assert "at epoch 1" in resumed.stdout and Checkpoints(folder).latest_epoch() == 3
    assert "Traceback" not in run.stderr + resumed.stderr


DROP_ROOT_THEN_RUN = """
import os, sys
from jaxhw import cli
from experiments import cifar_simple_cnn
if os.geteuid() == 0:  # as root every folder is writable: become nobody (imports are done)
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
cli.run(lambda: cifar_simple_cnn.main(sys.argv[1:]))
"""


def test_an_unwritable_folder_is_refused_before_anything_loads():
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        out = _python(DROP_ROOT_THEN_RUN, "--checkpoint-dir", str(locked / "run"),
                      "--compile-cache", "off", "--data-dir", str(top / "no-data"))
        assert out.returncode == cli.EXIT_WRITE, out.stderr
        assert _one_line(out.stderr) == (f"error: cannot write to {locked / 'run'} (Permission "
                                         f"denied in {locked}); fix its permissions or choose "
                                         f"another --checkpoint-dir")
        assert out.stdout == ""  # nothing loaded, nothing trained
        assert not list(locked.iterdir())
    finally:
        shutil.rmtree(top)


def test_check_writable_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="is not a folder"):
        check_writable(tmp_path / "file" / "run")
    check_writable(tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()


def test_an_optional_write_that_fails_is_one_warning_and_the_run_goes_on(tmp_path):
    from jaxhw.plotting import plot_history
    in_the_way = tmp_path / "history.png"
    in_the_way.mkdir()  # savefig cannot replace a folder, even as root
    history = [{"epoch": 1, "train_loss": 1.0, "eval_loss": 1.0, "eval_accuracy": 0.5}]
    with pytest.warns(OptionalWriteWarning, match=r"could not write the history plot \(Is a "
                                                  r"directory\); the run goes on without it"):
        assert not optional_write("the history plot", plot_history, history, in_the_way)
    assert optional_write("the history plot", plot_history, history, tmp_path / "ok.png")


def test_tensorboard_that_cannot_write_warns_and_lets_the_run_go_on(tmp_path):
    from jaxhw.train.tensorboard import EVENTS_DIR, TensorBoard
    (tmp_path / EVENTS_DIR).write_text("a file where the events folder goes")
    with pytest.warns(OptionalWriteWarning):
        board = TensorBoard(tmp_path)
    board.on_losses(1, 0, np.ones(4))
    board.on_epoch_end(1, {"step": 4, "train_loss": 1.0, "eval_loss": 1.0,
                           "eval_accuracy": 0.5, "train_time_s": 1.0, "eval_time_s": 1.0,
                           "compile_time_s": 0.0}, None)
    board.close()


# ------------------------------------------------------------------ damaged run folders
def test_a_damaged_json_file_is_named():
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "results.json"
        path.write_text('{"experiment": "x", ')
        with pytest.raises(RunFileError, match=f"{path} is damaged .not valid JSON: "):
            read_json(path, "rerun it")
        with pytest.raises(RunFileError, match="is missing; rerun it"):
            read_json(Path(d) / "history.json", "rerun it")


def _truncate_arrays(step: Path) -> None:
    for file in step.rglob("*"):
        if file.is_file() and file.stat().st_size > 1000:
            with open(file, "r+b") as f:
                f.truncate(100)


def test_resume_sets_a_truncated_latest_checkpoint_aside_and_uses_the_one_before(tmp_path):
    import jax.numpy as jnp
    ckpt = Checkpoints(tmp_path / "run", best_metric=None)
    state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(64, 64)), jnp.float32)}
    for epoch in (1, 2):
        ckpt.save(epoch, state, {"epoch": epoch})
    _truncate_arrays(tmp_path / "run" / "2")
    reopened = Checkpoints(tmp_path / "run", best_metric=None)
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'run' / '2'} is damaged"):
        reopened.restore(state)
    restored, meta, skipped = reopened.restore_latest_good(state)
    assert meta["epoch"] == 1 and [e for e, _ in skipped] == [2]
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert (tmp_path / "run" / "2.damaged").is_dir() and reopened.epochs() == [1]
    reopened.save(2, state, {"epoch": 2})  # the epoch can be written again
    assert reopened.epochs() == [1, 2]


@pytest.mark.slow
def test_damaged_run_folders_are_one_line_for_predict_load_and_resume(tiny_data, tmp_path,
                                                                       capsys):
    from experiments import cifar_simple_cnn
    folder = tmp_path / "cnn"
    base = ["--data-dir", str(tiny_data), "--checkpoint-dir", str(folder), "--batch-size", "8",
            "--compile-cache", "off"]
    cifar_simple_cnn.main(base)
    results = (folder / "results.json").read_text()

    (folder / "results.json").write_text(results[:40])
    with pytest.raises(RunFileError, match=f"{folder / 'results.json'} is damaged"):
        jaxhw.load(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: cifar_simple_cnn.main(base + ["--predict", "x.png"]))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert err.startswith(f"error: {folder / 'results.json'} is damaged (not valid JSON")
    assert "--evaluate" in err
    cifar_simple_cnn.main(base + ["--evaluate"])  # writes results.json again
    assert json.loads((folder / "results.json").read_text())["test_accuracy"] == json.loads(
        results)["test_accuracy"]

    _truncate_arrays(folder / "2")
    with pytest.raises(CheckpointError, match=f"checkpoint {folder / '2'} is damaged"):
        jaxhw.load(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.run(lambda: cifar_simple_cnn.main(base + ["--predict", "x.png"]))
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: checkpoint {folder / '2'} is damaged") and "\n" not in err
    cifar_simple_cnn.main(base + ["--resume"])
    out = capsys.readouterr().out
    assert f"set aside {folder / '2'} as 2.damaged" in out and "at epoch 1" in out
    assert jaxhw.load(folder).epoch == 2


def test_a_notebook_cell_shows_jaxhw_errors_as_the_one_line(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from jaxhw import colab
    shell = InteractiveShell.instance()
    try:
        assert colab.one_line_errors()
        shell.run_cell("from jaxhw.train.divergence import Diverged\n"
                       "raise Diverged('the train loss', float('nan'), 9, 2, 3)"
                       ".completed(0.1, 1)")
        shell.run_cell("from jaxhw.files import WriteError\n"
                       "raise WriteError('could not write x (No space left on device)')")
        shell.run_cell("1 / 0")
    finally:
        InteractiveShell.clear_instance()
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0].startswith("diverged: the train loss is nan at step 9 (epoch 2 of 3, "
                             "learning rate 0.1)")
    assert err[1] == "error: could not write x (No space left on device)"
    assert "ZeroDivisionError" in captured.out + captured.err  # others keep their traceback
    assert "Diverged" not in captured.out and "WriteError" not in captured.out
