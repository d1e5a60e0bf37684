"""Dataset sources: CIFAR-10, Fashion-MNIST and IMDB as NumPy arrays.

Two places a split can come from:

* a local directory in the plain layout of ``../shared/datasets/README.md``
  (``cifar10/{train,test}.npz``, ``fashion_mnist/{train,test}.npz``,
  ``imdb/{train,test}.jsonl.gz``), named by ``--data-dir`` or ``$JAXHW_DATA_DIR``;
* TensorFlow Datasets, downloaded and prepared on first use, when no directory is given.

Offline, with neither, :func:`load_split` fails within seconds instead of letting tfds
retry its downloads for minutes.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

DATA_DIR_ENV = "JAXHW_DATA_DIR"
SPLITS = ("train", "test")


class DataError(RuntimeError):
    """A dataset could not be loaded; the message says which file and what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset looks like, and where tfds finds it."""

    name: str
    kind: Literal["image", "text"]
    class_names: tuple[str, ...]
    tfds_name: str
    tfds_url: str  # where tfds downloads the raw files from (probed before loading)
    image_shape: tuple[int, int, int] | None = None  # [height, width, channels]
    train_examples: int = 0  # of the published train split (flags are checked against it)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10", "image",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
        tfds_name="cifar10", tfds_url="https://www.cs.toronto.edu/~kriz/", image_shape=(32, 32, 3),
        train_examples=50_000),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "image",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        tfds_name="fashion_mnist",
        tfds_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        image_shape=(28, 28, 1), train_examples=60_000),
    "imdb": DatasetSpec(
        "imdb", "text", ("negative", "positive"),
        tfds_name="imdb_reviews", tfds_url="http://ai.stanford.edu/~amaas/data/sentiment/",
        train_examples=25_000),
}


@dataclasses.dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class TextSplit:
    texts: list[str]    # N raw review texts
    labels: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.labels)


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory: the argument, else ``$JAXHW_DATA_DIR``, else None (tfds)."""
    value = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    return Path(value).expanduser() if value is not None else None


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None
               ) -> ImageSplit | TextSplit:
    """Load one split of a dataset.

    Args:
      name: ``cifar10``, ``fashion_mnist`` or ``imdb``.
      split: ``train`` or ``test``.
      data_dir: local directory in the plain layout; None means ``$JAXHW_DATA_DIR`` and,
        when that is unset too, TensorFlow Datasets.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {name}; choose one of {SPLITS}")
    root = resolve_data_dir(data_dir)
    if root is not None:
        return _load_local(spec, split, root)
    return _load_tfds(spec, split)


# --------------------------------------------------------------------------- local files

def _load_local(spec: DatasetSpec, split: str, root: Path) -> ImageSplit | TextSplit:
    folder = root / spec.name
    suffix = ".npz" if spec.kind == "image" else ".jsonl.gz"
    path = folder / f"{split}{suffix}"
    if not path.is_file():
        hint = ("run `python ../shared/datasets/unpack.py` to write it, or leave "
                f"--data-dir and ${DATA_DIR_ENV} unset to use TensorFlow Datasets")
        if not root.is_dir():
            raise DataError(f"data directory {root} does not exist; {hint}")
        raise DataError(f"{path}: the {split} split of {spec.name} is missing; {hint}")
    if spec.kind == "image":
        return _read_images(spec, path)
    return _read_texts(spec, path)


def _read_images(spec: DatasetSpec, path: Path) -> ImageSplit:
    try:
        with np.load(path) as npz:
            if "images" not in npz or "labels" not in npz:
                raise DataError(f"{path}: expected arrays 'images' and 'labels', "
                                f"found {sorted(npz.files)}")
            images, labels = npz["images"], npz["labels"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated, not an npz
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
    if images.ndim == 3 and spec.image_shape[-1] == 1:
        images = images[..., None]  # grayscale files store [N, H, W]
    return ImageSplit(_check_images(spec, images, str(path)),
                      _check_labels(spec, labels, len(images), str(path)))


def _read_texts(spec: DatasetSpec, path: Path) -> TextSplit:
    texts, labels = [], []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    texts.append(row["text"])
                    labels.append(row["label"])
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DataError(f"{path}, line {lineno}: expected a JSON object with "
                                    f"'text' and 'label' ({e})") from e
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable gzip JSON-lines file ({e})") from e
    if not all(isinstance(t, str) for t in texts):
        raise DataError(f"{path}: every 'text' must be a string")
    return TextSplit(texts, _check_labels(spec, np.asarray(labels), len(texts), str(path)))


def _check_images(spec: DatasetSpec, images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.image_shape:
        raise DataError(f"{where}: images must have shape [N, {', '.join(map(str, spec.image_shape))}]"
                        f" (NHWC), got {list(images.shape)}")
    return images


def _check_labels(spec: DatasetSpec, labels: np.ndarray, n: int, where: str) -> np.ndarray:
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{where}: labels must have shape [{n}] to match the inputs, "
                        f"got {list(labels.shape)}")
    if n == 0:
        raise DataError(f"{where}: the split is empty")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= spec.num_classes:
        raise DataError(f"{where}: labels must lie in [0, {spec.num_classes - 1}], "
                        f"found values in [{lo}, {hi}]")
    return labels.astype(np.int32)


# --------------------------------------------------------------------------- tfds

def _tfds_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _tfds_prepared(spec: DatasetSpec) -> bool:
    return bool(glob.glob(str(_tfds_dir() / spec.tfds_name / "*" / "dataset_info.json")))


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether an HTTP request to ``url`` gets any answer (an HTTP error status counts: the
    server is there). A bare TCP probe is not enough: sandboxes and proxies accept
    connections they cannot serve."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, timeouts and resets are OSErrors
        return False


def keep_tensorflow_off_the_gpu(tf) -> None:
    """Hide the GPUs from TensorFlow (it only reads files; the GPU's memory belongs to
    JAX). TensorFlow initialised earlier (a notebook cell of one's own) can no longer
    hide them: then one warning says what that costs and what to do, not a traceback."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        if tf.config.get_visible_devices("GPU"):
            warnings.warn("TensorFlow was initialised before jaxhw read the dataset, so it "
                          "keeps the GPU visible and may take GPU memory JAX needs; restart "
                          "the kernel and load data through jaxhw before using TensorFlow, "
                          "or pass --data-dir", RuntimeWarning, stacklevel=2)


def _load_tfds(spec: DatasetSpec, split: str) -> ImageSplit | TextSplit:
    if not _tfds_prepared(spec) and not reachable(spec.tfds_url):
        raise DataError(
            f"no data for {spec.name}: no local data directory was given and TensorFlow "
            f"Datasets cannot download it ({spec.tfds_url} is unreachable). Either pass "
            f"--data-dir DIR or set ${DATA_DIR_ENV} to a directory in the plain layout "
            f"(on the course machines: `python ../shared/datasets/unpack.py`, then "
            f"--data-dir ~/.cache/jaxhw-data), or run where tfds can download "
            f"{spec.tfds_name} (it is prepared under {_tfds_dir()} on first use).")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    keep_tensorflow_off_the_gpu(tf)
    # Chunks of 4096 rather than batch_size=-1, which TF's generator datasets cannot batch.
    ds = tfds.load(spec.tfds_name, split=split, as_supervised=True).batch(4096)
    chunks = list(tfds.as_numpy(ds))
    inputs = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    where = f"tfds:{spec.tfds_name}/{split}"
    if spec.kind == "text":
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in inputs]
        return TextSplit(texts, _check_labels(spec, np.asarray(labels), len(texts), where))
    images = np.asarray(inputs)
    return ImageSplit(_check_images(spec, images, where),
                      _check_labels(spec, np.asarray(labels), len(images), where))
