import time

import numpy as np
import pytest

from jaxhw.data import DataError, ImageSplit, TextSplit, load_split
from jaxhw.data import sources


def test_local_cifar10(tiny_data):
    split = load_split("cifar10", "train", tiny_data)
    assert isinstance(split, ImageSplit)
    assert split.images.shape == (64, 32, 32, 3) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32 and split.labels.max() == 9


def test_local_fashion_mnist_gets_a_channel_axis(tiny_data):
    split = load_split("fashion_mnist", "test", tiny_data)
    assert split.images.shape == (40, 28, 28, 1)


def test_local_imdb(tiny_data):
    split = load_split("imdb", "train", tiny_data)
    assert isinstance(split, TextSplit)
    assert len(split) == 64 and split.texts[1] == "review 1 was good<br />"
    assert list(split.labels[:4]) == [0, 1, 0, 1]


def test_env_variable_names_the_directory(tiny_data, monkeypatch):
    monkeypatch.setenv("JAXHW_DATA_DIR", str(tiny_data))
    assert len(load_split("cifar10", "test")) == 40


def test_missing_split_names_the_file(tiny_data):
    (tiny_data / "cifar10" / "test.npz").unlink()
    with pytest.raises(DataError, match=r"cifar10/test\.npz.*missing.*unpack\.py"):
        load_split("cifar10", "test", tiny_data)


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split("cifar10", "train", tmp_path / "nowhere")


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((4, 32, 32), np.uint8), np.zeros(4, np.uint8), r"shape \[N, 32, 32, 3\]"),
    (np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, np.uint8), "must be uint8"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 2, 10]), r"\[0, 9\].*\[0, 10\]"),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(3, np.uint8), r"shape \[4\]"),
])
def test_bad_arrays_are_clear_errors(tiny_data, images, labels, message):
    path = tiny_data / "cifar10" / "train.npz"
    np.savez(path, images=images, labels=labels)
    with pytest.raises(DataError, match=message) as err:
        load_split("cifar10", "train", tiny_data)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_npz_is_a_data_error_not_a_zip_traceback(tiny_data, keep):
    path = tiny_data / "cifar10" / "train.npz"
    data = path.read_bytes()
    path.write_bytes(data[:int(keep * len(data))])  # an interrupted download or copy
    with pytest.raises(DataError, match="train.npz: not a readable .npz file"):
        load_split("cifar10", "train", tiny_data)


def test_corrupt_files_are_clear_errors(tiny_data):
    (tiny_data / "cifar10" / "train.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_split("cifar10", "train", tiny_data)
    (tiny_data / "imdb" / "test.jsonl.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test.jsonl.gz"):
        load_split("imdb", "test", tiny_data)


def test_unknown_names():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*cifar10"):
        load_split("mnist", "train")
    with pytest.raises(DataError, match="unknown split 'valid'"):
        load_split("cifar10", "valid")


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("fashion_mnist", (28, 28, 1))])
def test_tfds_source_images(name, shape, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")  # absent on GPU machines without TF
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setattr(sources, "reachable", lambda url, **kw: True)
    with tfds.testing.mock_data(num_examples=12):
        split = load_split(name, "train")
    assert split.images.shape == (12, *shape) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32 and 0 <= split.labels.min() <= split.labels.max() <= 9


def test_tfds_source_text(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setattr(sources, "reachable", lambda url, **kw: True)
    with tfds.testing.mock_data(num_examples=5):
        split = load_split("imdb", "test")
    assert len(split.texts) == 5 and all(isinstance(t, str) for t in split.texts)


def test_offline_without_data_fails_fast_naming_both_options(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXHW_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # nothing prepared there
    monkeypatch.setattr(sources, "reachable", lambda url, **kw: False)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_split("cifar10", "train")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "--data-dir" in message and "JAXHW_DATA_DIR" in message
    assert "TensorFlow Datasets" in message


def test_reachability_probe_times_out_quickly():
    start = time.perf_counter()
    assert not sources.reachable("http://tfds-host.invalid/", timeout=0.5)  # never resolves
    assert time.perf_counter() - start < 3


def test_tensorflow_initialised_earlier_is_a_warning_not_a_traceback():
    from types import SimpleNamespace

    from jaxhw.data.sources import keep_tensorflow_off_the_gpu

    def refuse(devices, kind):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    hidden = []
    fresh = SimpleNamespace(config=SimpleNamespace(
        set_visible_devices=lambda devices, kind: hidden.append((devices, kind)),
        get_visible_devices=lambda kind: []))
    keep_tensorflow_off_the_gpu(fresh)
    assert hidden == [([], "GPU")]
    late = SimpleNamespace(config=SimpleNamespace(set_visible_devices=refuse,
                                                  get_visible_devices=lambda kind: ["GPU:0"]))
    with pytest.warns(RuntimeWarning, match="TensorFlow was initialised before jaxhw"):
        keep_tensorflow_off_the_gpu(late)
    no_gpu = SimpleNamespace(config=SimpleNamespace(set_visible_devices=refuse,
                                                    get_visible_devices=lambda kind: []))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep_tensorflow_off_the_gpu(no_gpu)  # nothing to warn about without a GPU
