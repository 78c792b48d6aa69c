"""TFDS builder ``isic2018``: ISIC 2018 dermoscopy images with a lesion mask and one of seven diagnoses.

Two sources, one config each per stored resolution (longer side 256 or 512 px):

- ``task3_*``: the ISIC 2018 Task 3 (HAM10000) training images and one-hot diagnoses, masks from the HAM10000 lesion
  segmentations, grouped by ``lesion_id`` (several images of one lesion stay in one split).
- ``task1_*``: the ISIC 2018 Task 1 training images and masks, diagnoses from the ISIC Archive's metadata export;
  images with no diagnosis, or one outside the seven classes, are left out and recorded.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mtunet.data.manual import ManualBuilder, ManualConfig, Source, read_colour_pair, read_table, require

# The seven diagnoses, in the order of the Task 3 ground-truth columns.
CLASS_NAMES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]

CHALLENGE_PAGE = "https://challenge.isic-archive.com/data/#2018"
HAM10000_PAGE = "https://doi.org/10.7910/DVN/DBW86T"
ARCHIVE_PAGE = "https://gallery.isic-archive.com"

TASK3_IMAGES = Source("ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_Input.zip", CHALLENGE_PAGE)
TASK3_LABELS = Source("ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
                      "ISIC2018_Task3_Training_GroundTruth.zip", CHALLENGE_PAGE)
LESION_GROUPINGS = Source("ISIC2018_Task3_Training_LesionGroupings.csv",
                          "ISIC2018_Task3_Training_LesionGroupings.csv", CHALLENGE_PAGE)
HAM10000_METADATA = Source("HAM10000_metadata.csv", "HAM10000_metadata (as CSV)", HAM10000_PAGE)
HAM10000_MASKS = Source("HAM10000_segmentations_lesion_tschandl", "HAM10000_segmentations_lesion_tschandl.zip",
                        HAM10000_PAGE)
TASK1_IMAGES = Source("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1-2_Training_Input.zip", CHALLENGE_PAGE)
TASK1_MASKS = Source("ISIC2018_Task1_Training_GroundTruth", "ISIC2018_Task1_Training_GroundTruth.zip",
                     CHALLENGE_PAGE)
ARCHIVE_DIAGNOSES = Source("metadata.csv", "the ISIC Archive's metadata export of the Task 1 images", ARCHIVE_PAGE)

# ISIC Archive diagnosis names of each class, as HAM10000 (Tschandl et al. 2018) defines the classes; the class
# codes themselves are accepted too, in any case.
ARCHIVE_NAMES = {
    "MEL": ("melanoma",),
    "NV": ("nevus",),
    "BCC": ("basal cell carcinoma",),
    "AKIEC": ("actinic keratosis", "intraepithelial carcinoma", "bowen's disease"),
    "BKL": ("pigmented benign keratosis", "seborrheic keratosis", "solar lentigo", "lichenoid keratosis",
            "lichen planus-like keratosis"),
    "DF": ("dermatofibroma",),
    "VASC": ("vascular lesion", "angioma", "angiokeratoma", "pyogenic granuloma", "hemorrhage"),
}
DIAGNOSIS_CLASS = {name: code for code, names in ARCHIVE_NAMES.items() for name in (code.lower(), *names)}


@dataclasses.dataclass
class IsicConfig(ManualConfig):
    """``source``: ``"task3"`` (HAM10000 labels and masks) or ``"task1"`` (Task 1 masks, ISIC Archive labels)."""

    source: str = "task3"


class Builder(ManualBuilder):
    """ISIC 2018 dermoscopy images: lesion masks and seven diagnoses."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Task 3 (HAM10000) and Task 1 sources, stored at 256 and 512 px."}
    BUILDER_CONFIGS = [
        IsicConfig(name=f"{source}_{side}", source=source, max_side=side,
                   description=f"{what}, longer side {side} px")
        for source, what in (("task3", "Task 3 images, HAM10000 masks, grouped by lesion"),
                             ("task1", "Task 1 images and masks, ISIC Archive diagnoses"))
        for side in (256, 512)
    ]
    IMAGE_ENCODING = "jpeg"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Unzip into one folder (mtunet's --data-dir / --manual-dir):

    Config task3_256 / task3_512 (from {CHALLENGE_PAGE} and {HAM10000_PAGE}):
      ISIC2018_Task3_Training_Input.zip          -> ISIC2018_Task3_Training_Input/ISIC_*.jpg
      ISIC2018_Task3_Training_GroundTruth.zip    -> ISIC2018_Task3_Training_GroundTruth/
                                                    ISIC2018_Task3_Training_GroundTruth.csv
      ISIC2018_Task3_Training_LesionGroupings.csv (or HAM10000_metadata.csv)
      HAM10000_segmentations_lesion_tschandl.zip -> HAM10000_segmentations_lesion_tschandl/ISIC_*_segmentation.png

    Config task1_256 / task1_512 (from {CHALLENGE_PAGE} and {ARCHIVE_PAGE}):
      ISIC2018_Task1-2_Training_Input.zip        -> ISIC2018_Task1-2_Training_Input/ISIC_*.jpg
      ISIC2018_Task1_Training_GroundTruth.zip    -> ISIC2018_Task1_Training_GroundTruth/ISIC_*_segmentation.png
      metadata.csv: the ISIC Archive's metadata of these images, with the columns isic_id,diagnosis
    """

    def _class_names(self) -> list[str]:
        return CLASS_NAMES

    def _find_examples(self, root):
        if self.builder_config.source == "task3":
            return self._find_task3(root)
        return self._find_task1(root)

    def _lesions(self, root) -> dict[str, str]:
        """``{image id: lesion id}`` from the Task 3 lesion groupings, else from the HAM10000 metadata."""
        path = require(root, LESION_GROUPINGS, HAM10000_METADATA)
        if path.name == LESION_GROUPINGS.path:
            table = read_table(path, ["image", "lesion_id"], LESION_GROUPINGS)
            return dict(zip(table["image"], table["lesion_id"]))
        table = read_table(path, ["image_id", "lesion_id"], HAM10000_METADATA)
        return dict(zip(table["image_id"], table["lesion_id"]))

    def _find_task3(self, root):
        images = require(root, TASK3_IMAGES, folder=True)
        masks = require(root, HAM10000_MASKS, folder=True)
        labels = read_table(require(root, TASK3_LABELS), ["image", *CLASS_NAMES], TASK3_LABELS).set_index("image")
        lesions = self._lesions(root)
        found = []
        for path in sorted(images.glob("ISIC_*.jpg")):
            example_id = path.stem
            mask = masks / f"{example_id}_segmentation.png"
            if example_id not in labels.index:
                self.leave_out(example_id, f"no row in {TASK3_LABELS.path}")
                continue
            try:
                one_hot = labels.loc[example_id, CLASS_NAMES].astype(float).to_numpy()
            except ValueError:
                one_hot = np.zeros(len(CLASS_NAMES))
            if sorted(one_hot.tolist()) != [0.0] * (len(CLASS_NAMES) - 1) + [1.0]:
                self.leave_out(example_id, f"its row in {TASK3_LABELS.path} is not one-hot")
            elif not mask.is_file():
                self.leave_out(example_id, f"no mask {HAM10000_MASKS.path}/{mask.name}")
            else:
                found.append((example_id, {"image": path, "mask": mask, "patient": lesions.get(example_id, ""),
                                           "label": CLASS_NAMES[int(np.argmax(one_hot))]}))
        return found

    def _find_task1(self, root):
        images = require(root, TASK1_IMAGES, folder=True)
        masks = require(root, TASK1_MASKS, folder=True)
        table = read_table(require(root, ARCHIVE_DIAGNOSES), ["isic_id", "diagnosis"], ARCHIVE_DIAGNOSES)
        diagnoses = dict(zip(table["isic_id"], table["diagnosis"]))
        lesions = dict(zip(table["isic_id"], table["lesion_id"])) if "lesion_id" in table.columns else {}
        found = []
        for path in sorted(images.glob("ISIC_*.jpg")):
            example_id = path.stem
            mask = masks / f"{example_id}_segmentation.png"
            diagnosis = diagnoses.get(example_id, "")
            if not mask.is_file():
                self.leave_out(example_id, f"no mask {TASK1_MASKS.path}/{mask.name}")
            elif not diagnosis:
                self.leave_out(example_id, f"no diagnosis in {ARCHIVE_DIAGNOSES.path}")
            elif diagnosis.lower() not in DIAGNOSIS_CLASS:
                self.leave_out(example_id, f"diagnosis {diagnosis!r} is none of the seven classes")
            else:
                found.append((example_id, {"image": path, "mask": mask, "patient": lesions.get(example_id, ""),
                                           "label": DIAGNOSIS_CLASS[diagnosis.lower()]}))
        return found

    def _read_example(self, example_id, found):
        image, mask = read_colour_pair(found["image"], found["mask"], "JPEG", "PNG")
        return {"patient": found["patient"], "image": image, "mask": mask, "label": found["label"]}
