"""Seeded fake PANDA (``prostate-cancer-grade-assessment``) download in its layout, for the panda builder's tests.

``python datasets/panda/panda_fake_data.py`` rewrites ``dummy_data/``: ``train.csv`` and 18 slides (3 per ISUP grade,
providers alternating), each a 3-level pyramidal TIFF (256x192, 64x48, 16x12 px; JPEG tiles, levels marked as
reduced-resolution pages) with a mask TIFF of the same levels (values in the first of 3 channels, deflate tiles).
Radboud masks hold stroma (1), benign epithelium (2) and Gleason 3-5 regions; Karolinska masks benign tissue (1) and
cancer (2). Plus a slide without mask, a corrupt slide and a slide of a single level.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from mtunet.data.fake_downloads import FakeDownload, FakeExample, fake_lesion, fake_tissue

LOWEST = (12, 16)  # height, width of the lowest level
DOWNSAMPLES = (16, 4, 1)  # of levels 0, 1, 2 relative to the lowest
GLEASON = {0: "0+0", 1: "3+3", 2: "3+4", 3: "4+3", 4: "4+4", 5: "4+5"}


def _write_pyramid(path: Path, lowest: np.ndarray, compression: str) -> None:
    """Writes ``lowest`` (H, W, 3) upsampled to every level, full resolution first, as a tiled pyramidal TIFF."""
    with tifffile.TiffWriter(path) as tiff:
        for level, factor in enumerate(DOWNSAMPLES):
            array = np.repeat(np.repeat(lowest, factor, axis=0), factor, axis=1)
            tiff.write(array, tile=(256, 256), photometric="rgb", compression=compression,
                       subfiletype=1 if level else 0)


def _label_values(rng, provider: str, grade: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, cancer)`` of a mask's lowest level: tissue classes of ``provider`` and where they are cancer."""
    height, width = LOWEST
    values = np.zeros(LOWEST, np.uint8)
    values[2:-2, 2:-2] = 1  # stroma (Radboud) or benign tissue (Karolinska)
    if provider == "radboud":
        values[2:5, 3:7] = 2  # benign epithelium: not cancer
    cancer = fake_lesion(rng, height, width) if grade else np.zeros(LOWEST, bool)
    if provider == "radboud":
        pattern = np.where(np.arange(width) < width // 2, 3, 4 + grade % 2)  # Gleason 3, 4 or 5
        values[cancer] = np.broadcast_to(pattern, LOWEST)[cancer]
    else:
        values[cancer] = 2
    return values, cancer


def write_fake_download(root, seed: int = 0) -> FakeDownload:
    """Writes the fake download into ``root`` (created) and returns what it holds."""
    root = Path(root)
    images, masks = root / "train_images", root / "train_label_masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(seed)
    fake, rows = FakeDownload(), []
    for number in range(21):
        image_id = rng.bytes(16).hex()
        grade, provider = number % 6, ("radboud", "karolinska")[number % 2]
        values, cancer = _label_values(rng, provider, grade)
        image = fake_tissue(rng, cancer, 3)
        rows.append({"image_id": image_id, "data_provider": provider, "isup_grade": grade,
                     "gleason_score": "negative" if provider == "karolinska" and not grade else GLEASON[grade]})
        _write_pyramid(images / f"{image_id}.tiff", image, "jpeg")
        if number == 18:  # a slide without mask
            fake.left_out[image_id] = "no mask"
            continue
        _write_pyramid(masks / f"{image_id}_mask.tiff", np.stack([values] + [np.zeros_like(values)] * 2, axis=2),
                       "zlib")
        if number == 19:  # a corrupt slide
            (images / f"{image_id}.tiff").write_bytes(b"II*\x00\x08\x00\x00\x00 truncated")
            fake.left_out[image_id] = "cannot be read"
        elif number == 20:  # a slide of one level only: its full resolution is never read
            tifffile.imwrite(images / f"{image_id}.tiff", image, photometric="rgb")
            fake.left_out[image_id] = "no reduced-resolution level"
        else:
            fake.examples[image_id] = FakeExample(f"isup_{grade}", "", image, cancer)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return fake


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dummy_data"
    shutil.rmtree(target, ignore_errors=True)
    write_fake_download(target)
