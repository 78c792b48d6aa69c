"""``inspect_dataset``: what ``mtunet data inspect`` reports about a dataset, as plain values."""

import numpy as np
import pandas as pd

from mtunet.data.dataset import load_dataset
from mtunet.data.splits import SPLIT_NAMES

# How many of the most common stored image sizes the report lists.
SIZES_SHOWN = 5


def _image_sizes(table: pd.DataFrame) -> dict:
    """Stored image sizes: how many distinct, the range of heights and widths, the most common with counts."""
    counts = table.groupby(["height", "width"]).size().sort_values(ascending=False, kind="stable")
    return {
        "distinct": int(len(counts)),
        "height": [int(table["height"].min()), int(table["height"].max())],
        "width": [int(table["width"].min()), int(table["width"].max())],
        "most_common": [[int(height), int(width), int(count)]
                        for (height, width), count in counts.head(SIZES_SHOWN).items()],
    }


def _mask_coverage(table: pd.DataFrame, class_names) -> dict:
    """Per class and overall: examples with a mask, empty masks, and the mean, smallest and largest lesion share of the
    image."""
    coverage = {}
    for name, rows in [*((name, table[table["label"] == name]) for name in class_names), ("all", table)]:
        fractions = rows["lesion_fraction"].dropna().to_numpy()  # NaN: an image without a mask
        coverage[name] = {
            "examples": int(fractions.size),
            "empty_masks": int(np.sum(fractions == 0)),
            "mean_lesion_fraction": float(fractions.mean()) if fractions.size else 0.0,
            "min_lesion_fraction": float(fractions.min()) if fractions.size else 0.0,
            "max_lesion_fraction": float(fractions.max()) if fractions.size else 0.0,
        }
    return coverage


def _mask_class_fractions(table: pd.DataFrame, info) -> dict:
    """Per mask class of ``info`` (a ``DatasetInfo``): the mean share of the stored masks' pixels of that class."""
    if not (info.multiclass_masks or info.multilabel_masks):
        return {info.mask_classes[0]: float(table["lesion_fraction"].mean())}  # pandas leaves NaN out
    return {name: float(table[f"fraction_{name}"].mean()) for name in info.mask_classes}


def _lesion_type_summary(table: pd.DataFrame, info) -> dict:
    """Per lesion type of multi-label masks: the examples whose mask of that type is present, those where it is
    empty, and the mean share of the image it covers over them; ``{}`` for masks of one channel."""
    if not info.multilabel_masks:
        return {}
    summary = {}
    for name in info.mask_classes:
        fractions = table[f"fraction_{name}"].dropna().to_numpy()  # NaN: that lesion type's mask is missing
        summary[name] = {"present": int(fractions.size), "empty_masks": int(np.sum(fractions == 0)),
                         "mean_lesion_fraction": float(fractions.mean()) if fractions.size else 0.0}
    return summary


def _target_summary(dataset) -> dict:
    """Per further target head: its kind and columns, and per column how many examples have a value, with the class
    counts (categorical, ordinal) or the values' mean, standard deviation, min and max (continuous)."""
    summary = {}
    for head in dataset.info.target_heads:
        values = np.concatenate([dataset.targets(split)[head.name] for split in SPLIT_NAMES])
        if head.continuous:
            columns = {column: {"present": int(np.sum(~np.isnan(column_values))),
                                **({"mean": float(np.nanmean(column_values)), "std": float(np.nanstd(column_values)),
                                    "min": float(np.nanmin(column_values)), "max": float(np.nanmax(column_values))}
                                   if np.any(~np.isnan(column_values)) else {})}
                       for column, column_values in zip(head.columns, values.T)}
        else:
            counts = np.bincount(values[values >= 0], minlength=len(head.class_names))
            columns = {head.columns[0]: {"present": int(counts.sum()),
                                         "classes": dict(zip(head.class_names, map(int, counts)))}}
        summary[head.name] = {"kind": head.kind, "examples": int(len(values)), "columns": columns}
    return summary


def _pixel_statistics(dataset) -> tuple[list, list]:
    """Per-channel mean and standard deviation (0-255) of the train split as served, one batch at a time."""
    total = squares = count = 0
    for images, _ in dataset.pipeline("train", batch_size=64, training=False):
        pixels = images.numpy().reshape(-1, images.shape[-1]).astype(np.float64)
        total, squares, count = total + pixels.sum(axis=0), squares + (pixels ** 2).sum(axis=0), count + len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0))
    return mean.round(2).tolist(), std.round(2).tolist()


def inspect_dataset(name: str, *, data_dir=None, image_size: int = 224, seed: int = 0,
                    skip_bad_files: bool = False, memory_limit: int | None = None, allow_missing=()) -> dict:
    """Loads a dataset as ``load_dataset`` would (bad files raise ``DataError`` unless ``skip_bad_files``; images
    without a mask are kept with ``allow_missing=("mask",)`` and counted in ``info["missing_masks"]``) and
    describes it.

    Returns:
        A JSON-serialisable dict: ``info`` (``DatasetInfo.to_dict()``, whose ``skipped`` lists the files left out
        and why), ``grouping`` of the splits (``"patient"``, ``"example"`` or ``"published"``), ``groups``
        (patients per split and ``"total"``), ``image_sizes`` as stored (``distinct``, ``height`` and ``width``
        ``[min, max]``, ``most_common`` ``[height, width, count]``), ``mask_coverage`` (per class and ``"all"``:
        ``examples`` with a mask, ``empty_masks``, ``mean_``, ``min_`` and ``max_lesion_fraction`` of the stored
        masks, any mask class counting as lesion), ``mask_classes`` (``info.mask_classes``: ``["lesion"]`` for
        binary masks), ``mask_class_fractions`` (per mask class, the mean share of the stored masks' pixels of that
        class), ``lesion_types`` (multi-label masks only, else ``{}``: per lesion type, the examples whose mask of
        that type is ``present``, the ``empty_masks`` among them and their ``mean_lesion_fraction``),
        ``pixel_mean`` and ``pixel_std`` (per channel, 0-255, train split, as served), and ``target_heads`` (per
        further target head: ``kind``, ``examples`` and per column the ``present`` values with their class counts or
        mean, std, min and max).
    """
    dataset = load_dataset(name, data_dir=data_dir, image_size=image_size, seed=seed, skip_bad_files=skip_bad_files,
                           memory_limit=memory_limit, allow_missing=allow_missing)
    tables = {split: dataset.table(split) for split in SPLIT_NAMES}
    table = pd.concat(tables.values(), ignore_index=True)
    pixel_mean, pixel_std = _pixel_statistics(dataset)
    return {
        "info": dataset.info.to_dict(),
        "grouping": dataset.splits.grouping,
        "groups": {**{split: int(rows["group"].nunique()) for split, rows in tables.items()},
                   "total": int(table["group"].nunique())},
        "image_sizes": _image_sizes(table),
        "mask_coverage": _mask_coverage(table, dataset.info.class_names),
        "mask_classes": list(dataset.info.mask_classes),
        "mask_class_fractions": _mask_class_fractions(table, dataset.info),
        "lesion_types": _lesion_type_summary(table, dataset.info),
        "pixel_mean": pixel_mean,
        "pixel_std": pixel_std,
        "target_heads": _target_summary(dataset),
    }
