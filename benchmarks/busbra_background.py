"""A BUS-BRA variant with a third of its images normal (empty masks), for measuring mask losses on empty masks.

    python benchmarks/busbra_background.py ../shared/data/busbra runs/data/busbra-background

BUS-BRA has a lesion in every image; clinical sets often do not (BUSI: a sixth of its images are normal). This writes
a folder dataset of the same size, 801 images: 534 BUS-BRA images (whole patients in a seeded order) and 267 square
crops of the breast tissue beside a lesion, not touching it (8 px margin), one from every second image (or the next
one where the lesion leaves no room), labelled ``normal`` with an empty mask and the source's patient id, so that
the patient-grouped split keeps a crop with its source image. Only numpy and Pillow: a crop needs no model code.
"""

import argparse
import csv
import pathlib

import numpy as np
from PIL import Image

LESION_IMAGES = 534
CROP_SIDE = 0.55  # of the image's shorter side
MARGIN = 8  # pixels between a crop and the lesion
TRIES = 200


def background_crop(mask: np.ndarray, rng: np.random.Generator):
    """``(top, left, side)`` of a random square that keeps ``MARGIN`` pixels from every lesion pixel, or None."""
    height, width = mask.shape
    side = int(CROP_SIDE * min(height, width))
    lesion = mask > 0
    rows, cols = np.nonzero(lesion)
    top_lesion, bottom_lesion = rows.min() - MARGIN, rows.max() + MARGIN
    left_lesion, right_lesion = cols.min() - MARGIN, cols.max() + MARGIN
    for _ in range(TRIES):
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        apart = (top + side <= top_lesion or top >= bottom_lesion or left + side <= left_lesion
                 or left >= right_lesion)
        if apart:
            return top, left, side
    return None


def write_variant(source: pathlib.Path, target: pathlib.Path, seed: int = 0) -> dict:
    """Writes the variant of ``source`` (a BUS-BRA folder dataset) to ``target``; returns its image counts."""
    with open(source / "labels.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    patients = sorted({row["patient"] for row in rows})
    order = {patient: rank for rank, patient in enumerate(np.random.default_rng(seed).permutation(patients))}
    rows.sort(key=lambda row: (order[row["patient"]], row["id"]))
    kept = rows[:LESION_IMAGES]
    (target / "images").mkdir(parents=True)
    (target / "masks").mkdir()
    rng = np.random.default_rng(seed)
    out_rows, crops = [], 0
    for index, row in enumerate(kept):
        image = Image.open(source / "images" / f"{row['id']}.png")
        mask = np.asarray(Image.open(source / "masks" / f"{row['id']}.png"))
        image.save(target / "images" / f"{row['id']}.png")
        Image.fromarray(mask).save(target / "masks" / f"{row['id']}.png")
        out_rows.append(row)
        owed = crops < (index + 2) // 2  # one crop per two images, from the next one where there is room
        crop = background_crop(mask, rng) if owed else None
        if crop is not None:
            crops += 1
            top, left, side = crop
            crop_id = f"{row['id']}-background"
            image.crop((left, top, left + side, top + side)).save(target / "images" / f"{crop_id}.png")
            Image.fromarray(np.zeros((side, side), np.uint8)).save(target / "masks" / f"{crop_id}.png")
            out_rows.append({"id": crop_id, "label": "normal", "patient": row["patient"]})
    with open(target / "labels.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["id", "label", "patient"])
        writer.writeheader()
        writer.writerows(out_rows)
    labels = [row["label"] for row in out_rows]
    return {label: labels.count(label) for label in sorted(set(labels))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path, help="the BUS-BRA folder dataset")
    parser.add_argument("target", type=pathlib.Path, help="a new folder for the variant")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.target.exists():
        parser.error(f"{args.target} exists; name a new folder")
    counts = write_variant(args.source, args.target, args.seed)
    print(f"wrote {sum(counts.values())} images to {args.target}: "
          + ", ".join(f"{count} {label}" for label, count in counts.items()))


if __name__ == "__main__":
    main()
