"""Seeded fake ISIC 2017 download in the official layout, for the isic2017 builder's tests.

``python datasets/isic2017/isic2017_fake_data.py`` rewrites ``dummy_data/``. For each of the challenge's sets
(Training, Validation, Test_v2): ``images_per_class`` 40x30 px JPEGs of each diagnosis (more in Training) with
their superpixel PNGs and a metadata CSV beside them as in the official folders, PNG masks of 0/255, and the Part 3
CSV with ``0.0`` / ``1.0`` marks; one 320x240 px test image (shrunk by the 256 px config). Training also holds an
unreadable JPEG, an image without mask, one without a ground-truth row and one marked both melanoma and seborrheic
keratosis.
"""

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mtunet.data.fake_downloads import FakeDownload, FakeExample, fake_lesion, fake_tissue

PARTS = ("Training", "Validation", "Test_v2")
# the Part 3 marks (melanoma, seborrheic_keratosis) of each diagnosis
MARKS = {"melanoma": (1.0, 0.0), "seborrheic_keratosis": (0.0, 1.0), "nevus": (0.0, 0.0)}
IMAGES_PER_CLASS = {"Training": 3, "Validation": 1, "Test_v2": 1}


def _write_image(rng, folder: Path, example_id: str, height: int, width: int, mask_folder: Path | None):
    """Writes a fake dermoscopy JPEG, its superpixel PNG and (unless ``mask_folder`` is None) its 0/255 mask;
    returns ``(image, mask)`` as written."""
    mask = fake_lesion(rng, height, width)
    image = fake_tissue(rng, mask, 3)
    cv2.imwrite(str(folder / f"{example_id}.jpg"), image[..., ::-1])
    cv2.imwrite(str(folder / f"{example_id}_superpixels.png"), np.zeros((height, width, 3), np.uint8))
    if mask_folder is not None:
        cv2.imwrite(str(mask_folder / f"{example_id}_segmentation.png"), mask.astype(np.uint8) * 255)
    return image, mask


def write_fake_download(root, seed: int = 0, scale: int = 1) -> tuple[FakeDownload, dict[str, list[str]]]:
    """Writes the fake download into ``root`` (created); returns what it holds and the ids of each usable example
    by split (``{"train": [...], "validation": [...], "test": [...]}``). ``scale`` multiplies the images per class."""
    root = Path(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    fake, splits, number = FakeDownload(), {}, 0
    for split, part in zip(("train", "validation", "test"), PARTS):
        images, masks = root / f"ISIC-2017_{part}_Data", root / f"ISIC-2017_{part}_Part1_GroundTruth"
        images.mkdir()
        masks.mkdir()
        rows, splits[split] = [], []
        for label, (melanoma, keratosis) in MARKS.items():
            for _ in range(IMAGES_PER_CLASS[part] * scale):
                example_id = f"ISIC_{number:07d}"
                number += 1
                height, width = (240, 320) if split == "test" and not splits[split] else (30, 40)
                image, mask = _write_image(rng, images, example_id, height, width, masks)
                fake.examples[example_id] = FakeExample(label, "", image, mask)
                splits[split].append(example_id)
                rows.append({"image_id": example_id, "melanoma": melanoma, "seborrheic_keratosis": keratosis})
        if split == "train":
            unreadable, no_mask, no_row, both = (f"ISIC_{number + offset:07d}" for offset in range(4))
            number += 4
            (images / f"{unreadable}.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
            cv2.imwrite(str(masks / f"{unreadable}_segmentation.png"), np.zeros((30, 40), np.uint8))
            _write_image(rng, images, no_mask, 30, 40, None)
            _write_image(rng, images, no_row, 30, 40, masks)
            _write_image(rng, images, both, 30, 40, masks)
            rows += [{"image_id": unreadable, "melanoma": 0.0, "seborrheic_keratosis": 0.0},
                     {"image_id": no_mask, "melanoma": 1.0, "seborrheic_keratosis": 0.0},
                     {"image_id": both, "melanoma": 1.0, "seborrheic_keratosis": 1.0}]
            fake.left_out.update({unreadable: "cannot be read", no_mask: "no mask", no_row: "no row",
                                  both: "at most one 1"})
        pd.DataFrame(rows).to_csv(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", index=False)
        pd.DataFrame({"image_id": [row["image_id"] for row in rows], "age_approximate": "unknown",
                      "sex": "unknown"}).to_csv(images / f"ISIC-2017_{part}_Data_metadata.csv", index=False)
    return fake, splits


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dummy_data"
    shutil.rmtree(target, ignore_errors=True)
    write_fake_download(target)
