"""Datasets as NumPy arrays, and the device-side batching and augmentation."""

from jaxhw.data.pipeline import (crop_and_flip, epoch_batches, eval_batches, normalize,
                                 random_crop, random_erase, random_flip, subset, subset_indices)
from jaxhw.data.sources import (DATA_DIR_ENV, DATASETS, DataError, DatasetSpec, ImageSplit,
                                TextSplit, get_spec, load_split, resolve_data_dir)

__all__ = [
    "DATA_DIR_ENV", "DATASETS", "DataError", "DatasetSpec", "ImageSplit", "TextSplit",
    "crop_and_flip", "epoch_batches", "eval_batches", "get_spec", "load_split", "normalize",
    "random_crop", "random_erase", "random_flip", "resolve_data_dir", "subset",
    "subset_indices",
]
