"""Seeded fake Kaggle JSRT download in its layout, for the jsrt builder's tests.

``python datasets/jsrt/jsrt_fake_data.py`` rewrites ``dummy_data/``: ``jsrt_metadata.csv`` with the Kaggle columns
(``study_id`` the image file, ``?`` where an image without nodule has no value), ``images/images/`` (as the archive
nests it) with 64x64 grayscale PNGs of 10 nodule images (``JPCLN...``, benign and malignant, subtlety 1-5, x and y
on the original 2048 px grid, size in mm) and 6 without (``JPCNN...``), and ``scratch/fold1``/``fold2`` with the SCR
lung masks as GIFs at half the image's size for all but two images; plus a row whose image is missing, an unknown
state, and a nodule without position.
"""

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from mtunet.data.fake_downloads import FakeDownload, FakeExample, fake_tissue

COLUMNS = ["study_id", "subtlety", "size", "age", "sex", "x", "y", "state", "position", "diagnosis"]
SIZE = 64
ORIGINAL_SIDE, PIXEL_MM = 2048, 0.175
DIAGNOSES = {"benign": ["granuloma", "hamartoma"], "malignant": ["adenocarcinoma", "squamous cell carcinoma"]}
CONFIGS = ("nodule_512", "lungs_512")


def _nodule(x, y, size_mm) -> np.ndarray:
    """The builder's disc, drawn independently: every pixel whose centre lies within the radius."""
    scale = SIZE / ORIGINAL_SIDE
    radius = max(1, round(size_mm / PIXEL_MM / 2 * scale))
    rows, columns = np.mgrid[:SIZE, :SIZE]
    return (rows - round(y * scale)) ** 2 + (columns - round(x * scale)) ** 2 <= radius ** 2


def _lungs(rng) -> tuple[np.ndarray, np.ndarray]:
    """Left and right lung masks at half the image's size: two upright ellipses."""
    half = SIZE // 2
    masks = []
    for centre in (half // 4 + 1, 3 * half // 4 - 1):
        mask = np.zeros((half, half), np.uint8)
        cv2.ellipse(mask, (centre, half // 2), (int(rng.integers(4, 7)), int(rng.integers(9, 13))), 0, 0, 360, 255,
                    thickness=-1)
        masks.append(mask)
    return masks[1], masks[0]  # the patient's left lung is on the image's right


def write_fake_download(root, seed: int = 0) -> dict[str, FakeDownload]:
    """Writes the fake download into ``root`` (created); returns what it holds per config."""
    root = Path(root)
    images = root / "images" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    fakes = {config: FakeDownload() for config in CONFIGS}
    rows = []
    cases = [(f"JPCLN{number:03d}", "benign" if number % 2 else "malignant") for number in range(1, 11)]
    cases += [(f"JPCNN{number:03d}", "non-nodule") for number in range(1, 7)]
    for index, (study, state) in enumerate(cases):
        row = {"study_id": f"{study}.png", "age": 40 + index, "sex": "male" if index % 2 else "female",
               "state": state}
        if state == "non-nodule":
            row.update(subtlety="?", size="?", x="?", y="?", position="?", diagnosis="?")
            nodule = np.zeros((SIZE, SIZE), bool)
        else:
            row.update(subtlety=f"{1 + index % 5}.0", size=f"{float(rng.integers(8, 30))}",
                       x=f"{float(rng.integers(500, 1500))}", y=f"{float(rng.integers(500, 1500))}",
                       position="l.upper lobe", diagnosis=DIAGNOSES[state][index // 2 % 2])
            nodule = _nodule(float(row["x"]), float(row["y"]), float(row["size"]))
        image = fake_tissue(rng, nodule, 1)[..., 0]
        cv2.imwrite(str(images / f"{study}.png"), image)
        if study == "JPCLN004":  # a nodule without position (no disc to draw) and without SCR masks
            row["x"] = "?"
            fakes["nodule_512"].left_out[study] = "needs numbers x, y and size"
            fakes["lungs_512"].left_out[study] = "no SCR lung masks"
            rows.append(row)
            continue
        fakes["nodule_512"].examples[study] = FakeExample(state, "", image, nodule)
        if study == "JPCNN006":  # no SCR masks
            fakes["lungs_512"].left_out[study] = "no SCR lung masks"
        else:
            fold = root / "scratch" / ("fold2" if int(study[-1]) % 2 == 0 else "fold1") / "masks"
            for lung, mask in zip(("left lung", "right lung"), _lungs(rng)):
                (fold / lung).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(fold / lung / f"{study}.gif")
            left, right = (np.asarray(Image.open(fold / lung / f"{study}.gif")) > 0
                           for lung in ("left lung", "right lung"))
            lungs = cv2.resize((left | right).astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST) > 0
            fakes["lungs_512"].examples[study] = FakeExample(state, "", image, lungs)
        rows.append(row)
    rows.append({"study_id": "JPCLN099.png", "state": "benign", "subtlety": "3.0", "size": "10.0", "x": "900.0",
                 "y": "900.0", "diagnosis": "granuloma"})  # its image is missing
    cv2.imwrite(str(images / "JPCLN098.png"), fake_tissue(rng, np.zeros((SIZE, SIZE), bool), 1)[..., 0])
    rows.append({"study_id": "JPCLN098.png", "state": "unsure", "subtlety": "2.0", "size": "12.0", "x": "800.0",
                 "y": "700.0", "diagnosis": "granuloma"})
    for fake in fakes.values():
        fake.left_out.update({"JPCLN099": "no image", "JPCLN098": "state 'unsure'"})
    table = pd.DataFrame(rows, dtype=object).reindex(columns=COLUMNS).fillna("?")
    table.to_csv(root / "jsrt_metadata.csv", index=False)
    return fakes


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dummy_data"
    shutil.rmtree(target, ignore_errors=True)
    write_fake_download(target)
