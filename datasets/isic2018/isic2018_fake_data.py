"""Seeded fake ISIC 2018 / HAM10000 download in the official layout, for the isic2018 builder's tests.

``python datasets/isic2018/isic2018_fake_data.py`` rewrites ``dummy_data/``. Task 3: 7 diagnoses x 4 lesions (more
on request, for training runs; every third lesion photographed twice), 40x30 px JPEGs, one 320x240 px image (shrunk
by the 256 px configs), one-hot ground truth with values ``1.0`` / ``0.0``, lesion groupings, HAM10000 masks; plus
an unreadable JPEG, an image without mask and one without a ground-truth row. Task 1: JPEGs with superpixel PNGs
beside them (as in the official Task 1-2 folder), masks, and an ISIC Archive ``metadata.csv`` naming diagnoses by
name, one empty, one outside the seven classes; plus an image without mask.
"""

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mtunet.data.fake_downloads import FakeDownload, FakeExample, fake_lesion, fake_tissue

# The official Task 3 ground-truth columns, in their order.
DIAGNOSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
LESIONS_PER_DIAGNOSIS = 4


def _write_pair(rng, image_path: Path, mask_path: Path | None, height: int, width: int):
    """Writes a fake dermoscopy JPEG (RGB) and its 0/255 PNG mask (none if ``mask_path`` is None); returns
    ``(image, mask)`` as written."""
    mask = fake_lesion(rng, height, width)
    image = fake_tissue(rng, mask, 3)
    cv2.imwrite(str(image_path), image[..., ::-1])
    if mask_path is not None:
        cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255)
    return image, mask


def _write_task3(root: Path, rng, lesions_per_diagnosis: int) -> FakeDownload:
    images, masks = root / "ISIC2018_Task3_Training_Input", root / "HAM10000_segmentations_lesion_tschandl"
    truth_dir = root / "ISIC2018_Task3_Training_GroundTruth"
    for folder in (images, masks, truth_dir):
        folder.mkdir(parents=True)
    (images / "LICENSE.txt").write_text("CC BY-NC 4.0\n")
    (truth_dir / "LICENSE.txt").write_text("CC BY-NC 4.0\n")
    fake, truth_rows, grouping_rows, number = FakeDownload(), [], [], 24306
    lesions = [(diagnosis, f"HAM_{1000 + 10 * index + lesion:07d}") for index, diagnosis in enumerate(DIAGNOSES)
               for lesion in range(lesions_per_diagnosis)]
    for position, (diagnosis, lesion) in enumerate(lesions):
        for view in range(2 if position % 3 == 0 else 1):
            example_id = f"ISIC_{number:07d}"
            number += 1
            height, width = (240, 320) if position == 5 and view == 0 else (30, 40)
            image, mask = _write_pair(rng, images / f"{example_id}.jpg", masks / f"{example_id}_segmentation.png",
                                      height, width)
            fake.examples[example_id] = FakeExample(diagnosis, lesion, image, mask)
            truth_rows.append({"image": example_id, **{name: float(name == diagnosis) for name in DIAGNOSES}})
            grouping_rows.append({"image": example_id, "lesion_id": lesion, "diagnosis_confirm_type": "histopathology"})
    unreadable, no_mask, no_row = (f"ISIC_{number + offset:07d}" for offset in range(3))
    (images / f"{unreadable}.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    _write_pair(rng, images / f"{no_mask}.jpg", None, 30, 40)
    _write_pair(rng, images / f"{no_row}.jpg", masks / f"{no_row}_segmentation.png", 30, 40)
    cv2.imwrite(str(masks / f"{unreadable}_segmentation.png"), np.zeros((30, 40), np.uint8))
    for example_id in (unreadable, no_mask):
        truth_rows.append({"image": example_id, **{name: float(name == "NV") for name in DIAGNOSES}})
        grouping_rows.append({"image": example_id, "lesion_id": "HAM_0009999", "diagnosis_confirm_type": "serial"})
    fake.left_out = {unreadable: "cannot be read", no_mask: "no mask", no_row: "no row"}
    pd.DataFrame(truth_rows).to_csv(truth_dir / "ISIC2018_Task3_Training_GroundTruth.csv", index=False)
    pd.DataFrame(grouping_rows).to_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", index=False)
    return fake


def _write_task1(root: Path, rng) -> FakeDownload:
    images, masks = root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir()
    masks.mkdir()
    # (ISIC Archive diagnosis, class it stands for or None, lesion id)
    rows = [("melanoma", "MEL", "IL_0000001"), ("nevus", "NV", "IL_0000002"), ("nevus", "NV", "IL_0000002"),
            ("seborrheic keratosis", "BKL", ""), ("basal cell carcinoma", "BCC", "IL_0000004"),
            ("MEL", "MEL", "IL_0000005"), ("", None, "IL_0000006"), ("squamous cell carcinoma", None, "IL_0000007")]
    fake, table = FakeDownload(), []
    for number, (diagnosis, label, lesion) in enumerate(rows):
        example_id = f"ISIC_{number:07d}"
        height, width = 28 + 2 * number, 36
        image, mask = _write_pair(rng, images / f"{example_id}.jpg", masks / f"{example_id}_segmentation.png",
                                  height, width)
        cv2.imwrite(str(images / f"{example_id}_superpixels.png"), np.zeros((height, width, 3), np.uint8))
        table.append({"isic_id": example_id, "attribution": "Anonymous", "diagnosis": diagnosis, "lesion_id": lesion})
        if label is None:
            fake.left_out[example_id] = "no diagnosis" if not diagnosis else "none of the seven classes"
        else:
            fake.examples[example_id] = FakeExample(label, lesion, image, mask)
    no_mask = f"ISIC_{len(rows):07d}"
    _write_pair(rng, images / f"{no_mask}.jpg", None, 30, 40)
    table.append({"isic_id": no_mask, "attribution": "Anonymous", "diagnosis": "nevus", "lesion_id": ""})
    fake.left_out[no_mask] = "no mask"
    pd.DataFrame(table).to_csv(root / "metadata.csv", index=False)
    return fake


def write_fake_download(root, seed: int = 0, lesions_per_diagnosis: int = LESIONS_PER_DIAGNOSIS
                        ) -> dict[str, FakeDownload]:
    """Writes the fake download into ``root`` (created) and returns what it holds per source: ``{"task3": ...,
    "task1": ...}``.

    ``lesions_per_diagnosis`` (1 to 10) sets the Task 3 lesions of each diagnosis. Training needs enough for
    lesion-grouped validation and test splits of 15% to hold every diagnosis: 8 are (the notebooks' tests use them).
    """
    if not 1 <= lesions_per_diagnosis <= 10:
        raise ValueError(f"lesions_per_diagnosis {lesions_per_diagnosis}: expected 1 to 10 (lesion ids are "
                         "HAM_<1000 + 10 x diagnosis + lesion>)")
    root = Path(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    return {"task3": _write_task3(root, rng, lesions_per_diagnosis), "task1": _write_task1(root, rng)}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dummy_data"
    shutil.rmtree(target, ignore_errors=True)
    write_fake_download(target)
