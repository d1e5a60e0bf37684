"""Every run writes TensorBoard event files whose scalars are the run's history."""

from __future__ import annotations

import json
import struct

import numpy as np


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files under ``folder`` as ``{tag: [(step, value)]}``,
    read straight from the TFRecord framing (length, CRC, event, CRC)."""
    from tensorboardX.proto.event_pb2 import Event
    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_a_run_folder_holds_event_files_matching_its_history(tiny_data, tmp_path):
    from experiments import cifar_simple_cnn
    run = tmp_path / "run"
    results = cifar_simple_cnn.run(cifar_simple_cnn.Config(
        data_dir=str(tiny_data), epochs=2, batch_size=8, print_every=4,
        checkpoint_dir=str(run), compile_cache="off"))
    history = json.loads((run / "history.json").read_text())
    scalars = read_scalars(run / "tensorboard")
    steps = [h["step"] for h in history]
    for tag, key in (("eval/loss", "eval_loss"), ("eval/accuracy", "eval_accuracy"),
                     ("train/epoch_loss", "train_loss"), ("time/train_s", "train_time_s")):
        assert [s for s, _ in scalars[tag]] == steps, tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [h[key] for h in history],
                                   rtol=1e-6, err_msg=tag)
    # One train loss per host read of the losses (every 50 steps, and at an epoch's end:
    # here 8 steps per epoch, 64 images of batch 8), the mean of the steps since the last
    # read: here each epoch's train loss.
    losses = scalars["train/loss"]
    assert [s for s, _ in losses] == steps
    np.testing.assert_allclose([v for _, v in losses], [h["train_loss"] for h in history],
                               rtol=1e-5)
    assert {v for _, v in scalars["train/learning_rate"]} == {np.float32(0.001)}
    assert results["epochs"] == 2


def test_a_resumed_run_continues_the_curves(tiny_data, tmp_path):
    from experiments import cifar_simple_cnn
    run = tmp_path / "run"
    common = dict(data_dir=str(tiny_data), batch_size=8, checkpoint_dir=str(run),
                  compile_cache="off")
    cifar_simple_cnn.run(cifar_simple_cnn.Config(epochs=1, **common))
    cifar_simple_cnn.run(cifar_simple_cnn.Config(epochs=2, resume="yes", **common))
    scalars = read_scalars(run / "tensorboard")
    assert [s for s, _ in scalars["eval/loss"]] == [8, 16]
    assert [s for s, _ in scalars["train/loss"]] == [8, 16]  # one read per epoch here
