"""Seeded fake Kaggle ``lgg-mri-segmentation`` download in its layout, for the lgg builder's tests.

``python datasets/lgg/lgg_fake_data.py`` rewrites ``dummy_data/``: ``kaggle_3m/`` with 10 cases (scan date in the
folder name), each with 3-channel 32x32 TIFF slices numbered 1, 2 and 10 (so that a text sort would misorder them)
and 0/255 mask TIFFs, tumour in slice 2 always and in slice 10 for every other case; ``data.csv`` with the Kaggle
columns, ``histological_type`` 1-3 for three patients each and empty for one; plus an unreadable slice and a slice
without mask.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from mtunet.data.fake_downloads import FakeDownload, FakeExample, fake_lesion, fake_tissue

HISTOLOGY = {1: "astrocytoma", 2: "oligoastrocytoma", 3: "oligodendroglioma"}
COLUMNS = ["Patient", "RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster", "RPPACluster",
           "OncosignCluster", "COCCluster", "histological_type", "neoplasm_histologic_grade", "tumor_tissue_site",
           "laterality", "tumor_location", "gender", "age_at_initial_pathologic", "race", "ethnicity", "death01"]
SLICES = (1, 2, 10)
SIZE = 32


def write_fake_download(root, seed: int = 0) -> dict[str, FakeDownload]:
    """Writes the fake download into ``root`` (created); returns what it holds per config (``"tumor"``,
    ``"histology"``)."""
    root = Path(root)
    cases_dir = root / "kaggle_3m"
    cases_dir.mkdir(parents=True)
    (cases_dir / "README.md").write_text("LGG Segmentation Dataset\n")
    rng = np.random.default_rng(seed)
    fakes = {"tumor": FakeDownload(), "histology": FakeDownload()}
    rows = []
    for number in range(10):
        patient = f"TCGA_{'CS' if number % 2 else 'DU'}_{4941 + number}"
        case = f"{patient}_{19960909 + number}"
        code = None if number == 9 else 1 + number % 3
        rows.append({"Patient": patient, "RNASeqCluster": 1 + number % 4, "histological_type": code,
                     "neoplasm_histologic_grade": 1 + number % 2, "gender": 1 + number % 2, "death01": number % 2})
        (cases_dir / case).mkdir()
        for slice_number in SLICES:
            example_id = f"{case}_{slice_number}"
            tumour = slice_number == 2 or (slice_number == 10 and number % 2 == 0)
            mask = fake_lesion(rng, SIZE, SIZE) if tumour else np.zeros((SIZE, SIZE), bool)
            image = fake_tissue(rng, mask, 3)
            tifffile.imwrite(cases_dir / case / f"{example_id}.tif", image, photometric="rgb")
            if (number, slice_number) == (3, 1):  # a slice without mask
                for fake in fakes.values():
                    fake.left_out[example_id] = "no mask"
                continue
            tifffile.imwrite(cases_dir / case / f"{example_id}_mask.tif", mask.astype(np.uint8) * 255)
            if (number, slice_number) == (4, 2):  # an unreadable slice
                (cases_dir / case / f"{example_id}.tif").write_bytes(b"II*\x00 truncated")
                for fake in fakes.values():
                    fake.left_out[example_id] = "cannot be read"
                continue
            fakes["tumor"].examples[example_id] = FakeExample(["no_tumor", "tumor"][tumour], patient, image, mask)
            if tumour and code is not None:
                fakes["histology"].examples[example_id] = FakeExample(HISTOLOGY[code], patient, image, mask)
        if code is None:
            fakes["histology"].left_out[case] = "no histological_type"
    pd.DataFrame(rows).reindex(columns=COLUMNS).to_csv(cases_dir / "data.csv", index=False)
    return fakes


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dummy_data"
    shutil.rmtree(target, ignore_errors=True)
    write_fake_download(target)
