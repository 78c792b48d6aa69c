"""Datasets for multi-task U-Nets: a registry of sources, patient-grouped splits and ``tf.data`` pipelines.

Examples::

    from mtunet.data import load_dataset
    ds = load_dataset("synthetic", image_size=64)
    train = ds.pipeline("train", batch_size=8, training=True)
"""

from mtunet.data.builders import left_out
from mtunet.data.dataset import DatasetInfo, LoadedDataset, load_dataset
from mtunet.data.images import BINARY_MASK_CLASSES
from mtunet.data.inspect import inspect_dataset
from mtunet.data.registry import DATASETS, DatasetSpec, get_dataset, prepare_dataset
from mtunet.data.splits import SPLIT_NAMES, Splits

__all__ = [
    "BINARY_MASK_CLASSES", "DATASETS", "SPLIT_NAMES", "DatasetInfo", "DatasetSpec", "LoadedDataset", "Splits",
    "get_dataset", "inspect_dataset", "left_out", "load_dataset", "prepare_dataset",
]
