"""TFDS builder ``panda``: prostate biopsy whole-slide images of the PANDA challenge, with their ISUP grade (0-5) and
a mask of cancerous tissue.

The slides are pyramidal TIFFs of up to ~100,000 px; the builder reads only their lowest-resolution level (with
tifffile; imagecodecs decodes the JPEG tiles), never the full-resolution one, and stores it shrunk to the config's
longer side. Mask values differ by data provider: Radboud marks Gleason patterns 3, 4 and 5 as 3, 4, 5 (0
background, 1 stroma, 2 benign epithelium), Karolinska marks cancerous tissue as 2 (0 background, 1 benign tissue);
both become mask 1. Each example is one slide, its own group.
"""

import numpy as np
import tensorflow_datasets as tfds
import tifffile

from mtunet.data.manual import ManualBuilder, ManualConfig, Source, Unusable, read_table, require

PAGE = "https://www.kaggle.com/c/prostate-cancer-grade-assessment/data"
DOWNLOAD = "the Kaggle competition prostate-cancer-grade-assessment (kaggle competitions download)"
TABLE = Source("train.csv", DOWNLOAD, PAGE)
IMAGES = Source("train_images", DOWNLOAD, PAGE)
MASKS = Source("train_label_masks", DOWNLOAD, PAGE)

CLASS_NAMES = [f"isup_{grade}" for grade in range(6)]
# Mask values that are cancerous tissue, per data_provider (PANDA's data description).
CANCER_VALUES = {"radboud": (3, 4, 5), "karolinska": (2,)}


def cancer_mask(values: np.ndarray, provider: str) -> np.ndarray:
    """``(H, W)`` bool: where the label values of a ``provider``'s mask (its first channel) mark cancer."""
    return np.isin(values, CANCER_VALUES[provider])


def read_lowest_level(path) -> np.ndarray:
    """The lowest-resolution level of a pyramidal TIFF; ``Unusable`` if it cannot be read or has no reduced level.

    tifffile lists the levels of the first series when the pages are marked as reduced-resolution images, else
    each level as a series of its own.
    """
    try:
        with tifffile.TiffFile(str(path)) as tiff:
            levels = list(tiff.series[0].levels)
            if len(levels) == 1:
                levels = list(tiff.series)
            if len(levels) == 1:
                raise Unusable(f"{path.name} has no reduced-resolution level; expected a pyramidal TIFF")
            return min(levels, key=lambda level: level.shape[0] * level.shape[1]).asarray()
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as error:
        raise Unusable(f"{path.name} cannot be read as a TIFF ({type(error).__name__})") from None


class Builder(ManualBuilder):
    """PANDA prostate biopsies: ISUP grade and cancerous-tissue mask from the lowest-resolution level."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Training slides with a mask, lowest-resolution level, longer side 512 or 1024 px."}
    BUILDER_CONFIGS = [
        ManualConfig(name=f"lowres_{side}", max_side=side,
                     description=f"lowest-resolution level, longer side at most {side} px")
        for side in (512, 1024)
    ]
    IMAGE_ENCODING = "jpeg"
    LABEL_KIND = "ordinal"  # ISUP grades 0-5, in order
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Join the competition at {PAGE}, download its data (kaggle competitions download -c
    prostate-cancer-grade-assessment, about 400 GB) and unzip it; give the folder that holds:
      train.csv                              image_id,data_provider,isup_grade,gleason_score
      train_images/<image_id>.tiff
      train_label_masks/<image_id>_mask.tiff
    """

    def _class_names(self) -> list[str]:
        return CLASS_NAMES

    def _find_examples(self, root):
        images = require(root, IMAGES, folder=True)
        masks = require(root, MASKS, folder=True)
        table = read_table(require(root, TABLE), ["image_id", "data_provider", "isup_grade"], TABLE)
        found = []
        for row in table.sort_values("image_id").itertuples(index=False):
            image, mask = images / f"{row.image_id}.tiff", masks / f"{row.image_id}_mask.tiff"
            provider = row.data_provider.lower()
            if not image.is_file():
                self.leave_out(row.image_id, f"no slide {IMAGES.path}/{image.name}")
            elif not mask.is_file():
                self.leave_out(row.image_id, f"no mask {MASKS.path}/{mask.name}")
            elif provider not in CANCER_VALUES:
                self.leave_out(row.image_id, f"data_provider {row.data_provider!r} is neither radboud nor karolinska")
            elif row.isup_grade not in [str(grade) for grade in range(6)]:
                self.leave_out(row.image_id, f"isup_grade {row.isup_grade!r} is not 0-5")
            else:
                found.append((row.image_id, {"image": image, "mask": mask, "provider": provider,
                                             "label": CLASS_NAMES[int(row.isup_grade)]}))
        return found

    def _read_example(self, example_id, found):
        image = read_lowest_level(found["image"])
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise Unusable(f"slide level is {image.shape} of {image.dtype}; expected RGB of uint8")
        values = read_lowest_level(found["mask"])
        values = values[..., 0] if values.ndim == 3 else values
        return {"patient": "", "image": image[..., :3], "mask": cancer_mask(values, found["provider"]),
                "label": found["label"]}
