"""BUS-BRA with a regression target: each lesion's area as a fraction of its image, for measuring regression heads.

    python benchmarks/busbra_area.py ../shared/data/busbra runs/data/busbra-area

Writes a folder dataset whose ``images/`` and ``masks/`` link to the source's files (nothing is copied), whose
``labels.csv`` is the source's with the column ``area_fraction`` (the share of the mask's pixels that are lesion, of
the image as stored: not of the letterboxed square the model sees), and whose ``columns.json`` declares it
continuous, so that ``mtunet train --dataset folder`` adds a regression head ``area_fraction`` beside the class head
and the mask. Only numpy and Pillow: the fraction needs no model code.
"""

import argparse
import csv
import json
import pathlib

import numpy as np
from PIL import Image

TARGET = "area_fraction"


def write_variant(source: pathlib.Path, target: pathlib.Path) -> dict:
    """Writes the variant of ``source`` (a folder dataset) to ``target``; returns the fraction's summary."""
    with open(source / "labels.csv", newline="") as file:
        reader = csv.DictReader(file)
        columns, rows = list(reader.fieldnames), list(reader)
    for folder in ("images", "masks"):
        (target / folder).mkdir(parents=True)
        for path in sorted((source / folder).iterdir()):
            (target / folder / path.name).symlink_to(path.resolve())
    fractions = []
    for row in rows:
        mask = next((source / "masks").glob(f"{row['id']}.*"))
        fractions.append(float(np.mean(np.asarray(Image.open(mask)) > 0)))
        row[TARGET] = f"{fractions[-1]:.6f}"
    with open(target / "labels.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns + [TARGET])
        writer.writeheader()
        writer.writerows(rows)
    (target / "columns.json").write_text(json.dumps({TARGET: {"kind": "continuous"}}, indent=1) + "\n")
    for name in ("classes.txt", "mask_classes.txt"):
        if (source / name).exists():
            (target / name).write_text((source / name).read_text())
    fractions = np.array(fractions)
    return {"images": len(rows), "mean": float(fractions.mean()), "std": float(fractions.std()),
            "min": float(fractions.min()), "max": float(fractions.max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=pathlib.Path, help="a folder dataset, e.g. ../shared/data/busbra")
    parser.add_argument("target", type=pathlib.Path, help="a new folder for the variant")
    arguments = parser.parse_args()
    if arguments.target.exists():
        parser.error(f"{arguments.target} exists; give a new folder")
    summary = write_variant(arguments.source, arguments.target)
    print(f"{summary['images']} images, {TARGET} mean {summary['mean']:.4f}, std {summary['std']:.4f}, range "
          f"{summary['min']:.4f}-{summary['max']:.4f}: {arguments.target}")


if __name__ == "__main__":
    main()
