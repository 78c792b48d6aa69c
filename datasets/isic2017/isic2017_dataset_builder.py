"""TFDS builder ``isic2017``: ISIC 2017 dermoscopy images with a lesion mask and one of three diagnoses, in the
challenge's own training / validation / test split (2000 / 150 / 600), stored at 256 or 512 px (longer side).

Part 3's ground truth marks ``melanoma`` and ``seborrheic_keratosis`` with 0/1 columns; an image marked neither is a
nevus (the challenge's third class), one marked both is left out and recorded.
"""

import tensorflow_datasets as tfds

from mtunet.data.manual import ManualBuilder, ManualConfig, Source, read_colour_pair, read_table, require

CLASS_NAMES = ["melanoma", "seborrheic_keratosis", "nevus"]
PAGE = "https://challenge.isic-archive.com/data/#2017"
# the challenge's split names: the folder and file names use the second
SPLITS = {"train": "Training", "validation": "Validation", "test": "Test_v2"}


def _sources(part: str) -> tuple[Source, Source, Source]:
    """The images, the Part 1 masks and the Part 3 labels of one split of the challenge."""
    prefix = f"ISIC-2017_{part}"
    return (Source(f"{prefix}_Data", f"{prefix}_Data.zip", PAGE),
            Source(f"{prefix}_Part1_GroundTruth", f"{prefix}_Part1_GroundTruth.zip", PAGE),
            Source(f"{prefix}_Part3_GroundTruth.csv", f"{prefix}_Part3_GroundTruth.csv", PAGE))


class Builder(ManualBuilder):
    """ISIC 2017 dermoscopy images: lesion masks, three diagnoses, the challenge's split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Training, validation and test sets of the challenge, stored at 256 and 512 px."}
    BUILDER_CONFIGS = [ManualConfig(name=str(side), max_side=side, description=f"longer side {side} px")
                       for side in (256, 512)]
    IMAGE_ENCODING = "jpeg"
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    From {PAGE}, unzip into one folder (mtunet's --data-dir / --manual-dir), for PART in Training, Validation and
    Test_v2:
      ISIC-2017_PART_Data.zip              -> ISIC-2017_PART_Data/ISIC_*.jpg
      ISIC-2017_PART_Part1_GroundTruth.zip -> ISIC-2017_PART_Part1_GroundTruth/ISIC_*_segmentation.png
      ISIC-2017_PART_Part3_GroundTruth.csv (columns image_id,melanoma,seborrheic_keratosis)
    """

    def _class_names(self) -> list[str]:
        return CLASS_NAMES

    def _find_examples(self, root):
        found = []
        for split, part in SPLITS.items():
            image_source, mask_source, label_source = _sources(part)
            images = require(root, image_source, folder=True)
            masks = require(root, mask_source, folder=True)
            labels = read_table(require(root, label_source), ["image_id", "melanoma", "seborrheic_keratosis"],
                                label_source).set_index("image_id")
            # the image folders also hold *_superpixels.png (Part 2's) and a metadata CSV: only the JPEGs count
            for path in sorted(images.glob("ISIC_*.jpg")):
                example_id = path.stem
                mask = masks / f"{example_id}_segmentation.png"
                if example_id not in labels.index:
                    self.leave_out(example_id, f"no row in {label_source.path}")
                    continue
                marks = [labels.loc[example_id, name] for name in CLASS_NAMES[:2]]
                try:
                    melanoma, keratosis = (float(mark) for mark in marks)
                except ValueError:
                    melanoma = keratosis = -1.0
                if {melanoma, keratosis} - {0.0, 1.0} or melanoma + keratosis > 1:
                    self.leave_out(example_id, f"its row in {label_source.path} marks melanoma {marks[0]!r} and "
                                               f"seborrheic_keratosis {marks[1]!r}; expected 0/1, at most one 1")
                elif not mask.is_file():
                    self.leave_out(example_id, f"no mask {mask_source.path}/{mask.name}")
                else:
                    label = "melanoma" if melanoma else "seborrheic_keratosis" if keratosis else "nevus"
                    found.append((example_id, {"image": path, "mask": mask, "label": label, "split": split}))
        return found

    def _read_example(self, example_id, found):
        image, mask = read_colour_pair(found["image"], found["mask"], "JPEG", "PNG")
        return {"patient": "", "image": image, "mask": mask, "label": found["label"],
                "split": found["split"]}
