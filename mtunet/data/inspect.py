"""``inspect_dataset``: what ``mtunet data inspect`` reports about a dataset, as plain values."""

import numpy as np

from mtunet.data.dataset import load_dataset
from mtunet.data.splits import SPLIT_NAMES


def inspect_dataset(name: str, *, data_dir=None, image_size: int = 224, seed: int = 0,
                    skip_bad_files: bool = False) -> dict:
    """Loads a dataset as ``load_dataset`` would and describes it.

    Returns:
        A JSON-serialisable dict: ``info`` (``DatasetInfo.to_dict()``), ``grouping`` of the splits (``"patient"``
        or ``"example"``), ``pixel_mean`` and ``pixel_std`` (per channel, 0-255, train split, as served) and
        ``lesions``: per class, the number of ``examples``, of ``empty_masks`` and the ``mean_lesion_fraction`` of
        the image area, over all splits.
    """
    dataset = load_dataset(name, data_dir=data_dir, image_size=image_size, seed=seed, skip_bad_files=skip_bad_files)
    train_images = dataset.arrays("train")[0]
    pixels = train_images.reshape(-1, train_images.shape[-1]).astype(np.float64)
    masks = np.concatenate([dataset.arrays(split)[1] for split in SPLIT_NAMES])
    labels = np.concatenate([dataset.labels(split) for split in SPLIT_NAMES])
    lesion_fraction = masks.reshape(len(masks), -1).mean(axis=1)
    lesions = {}
    for index, class_name in enumerate(dataset.info.class_names):
        fractions = lesion_fraction[labels == index]
        lesions[class_name] = {
            "examples": int(fractions.size),
            "empty_masks": int(np.sum(fractions == 0)),
            "mean_lesion_fraction": float(fractions.mean()) if fractions.size else 0.0,
        }
    return {
        "info": dataset.info.to_dict(),
        "grouping": dataset.splits.grouping,
        "pixel_mean": pixels.mean(axis=0).round(2).tolist(),
        "pixel_std": pixels.std(axis=0).round(2).tolist(),
        "lesions": lesions,
    }
