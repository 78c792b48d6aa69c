"""Seeded fake SIIM-ACR download in both official layouts, for the siim_acr builder's tests.

``python datasets/siim_acr/siim_acr_fake_data.py`` rewrites ``dummy_data/``. Challenge layout: 12 DICOMs of 48x64 px
(not square, so that a row-major decoding shows) in ``dicom-images-train/<study>/<series>/``, two of one patient, and
``train-rle.csv`` (header ``ImageId, EncodedPixels``, values after a space as in the original) whose masks are
encoded by ``encode_rle`` below, written independently of the builder's decoder after the challenge's
``mask2rle``; one image has two rows (two lesions), negatives are ``-1``. Plus a DICOM without row, a corrupt DICOM
and a malformed encoding. PNG layout: the same images and 0/255 masks in ``png_images/`` and ``png_masks/`` with
``stage_1_train_images.csv`` and ``stage_1_test_images.csv``; one mask missing.
"""

import shutil
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from mtunet.data.fake_downloads import FakeDownload, FakeExample, fake_lesion, fake_tissue

SHAPE = (48, 64)
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def encode_rle(mask: np.ndarray) -> str:
    """SIIM's relative run-length encoding of a ``(H, W)`` bool mask, walking the pixels column by column as the
    challenge's ``mask2rle`` does: each run is written as (pixels since the end of the previous run, length)."""
    height, width = mask.shape
    pairs, previous_end, run_start, position = [], 0, None, 0
    for x in range(width):
        for y in range(height):
            if mask[y, x] and run_start is None:
                run_start = position
            elif not mask[y, x] and run_start is not None:
                pairs += [run_start - previous_end, position - run_start]
                previous_end, run_start = position, None
            position += 1
    if run_start is not None:
        pairs += [run_start - previous_end, position - run_start]
    return " ".join(str(number) for number in pairs) or "-1"


def _lesion_in_half(rng, right: bool) -> np.ndarray:
    """A fake lesion in the left or right half of a ``SHAPE`` image."""
    mask = np.zeros(SHAPE, bool)
    half = SHAPE[1] // 2
    mask[:, half * right:half * (1 + right)] = fake_lesion(rng, SHAPE[0], half)
    return mask


def _write_dicom(path: Path, image: np.ndarray, image_id: str, patient: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = image_id
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = CR_IMAGE_STORAGE, image_id
    dataset.PatientID, dataset.Modality, dataset.BodyPartExamined = patient, "CR", "CHEST"
    dataset.Rows, dataset.Columns = image.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = image.tobytes()
    path.parent.mkdir(parents=True)
    dataset.save_as(path, enforce_file_format=True)


def write_fake_download(root, seed: int = 0) -> dict[str, FakeDownload]:
    """Writes both layouts into ``root`` (created); returns what each holds (``{"dicom": ..., "png": ...}``)."""
    root = Path(root)
    for folder in ("dicom-images-train", "png_images", "png_masks"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    fakes = {"dicom": FakeDownload(), "png": FakeDownload()}
    rle_rows, png_rows, patient = [], [], ""
    for number in range(12):
        image_id = f"1.2.276.0.7230010.3.1.4.8323329.{5597 + number}.1517875188.{959090 + number}"
        if number != 1:  # images 0 and 1 are of one patient
            patient = str(uuid.UUID(bytes=rng.bytes(16)))
        pneumothorax = number % 2 == 0
        lesions = [_lesion_in_half(rng, right=False)] if pneumothorax else []
        if number == 4:  # a second lesion on the other side, in a row of its own
            lesions.append(_lesion_in_half(rng, right=True))
        mask = np.logical_or.reduce(lesions) if lesions else np.zeros(SHAPE, bool)
        image = fake_tissue(rng, mask, 1)[..., 0]
        study = f"1.2.276.0.7230010.3.1.2.8323329.{5597 + number}.1517875188.{959089 + number}"
        dicom = root / "dicom-images-train" / study / f"{study}.1" / f"{image_id}.dcm"
        _write_dicom(dicom, image, image_id, patient)
        rle_rows += [(image_id, encode_rle(lesion)) for lesion in lesions] or [(image_id, "-1")]
        png_name = f"{number}_train_{int(pneumothorax)}_.png"
        cv2.imwrite(str(root / "png_images" / png_name), image)
        png_rows.append({"new_filename": png_name, "ImageId": image_id, "has_pneumo": int(pneumothorax)})
        if number == 9:  # a PNG without mask
            fakes["png"].left_out[image_id] = "no mask"
        else:
            cv2.imwrite(str(root / "png_masks" / png_name), mask.astype(np.uint8) * 255)
            fakes["png"].examples[image_id] = FakeExample(["no_pneumothorax", "pneumothorax"][pneumothorax], "",
                                                          image, mask)
        if number == 6:  # a malformed encoding
            rle_rows[-1] = (image_id, "17 3 2")
            fakes["dicom"].left_out[image_id] = "cannot be decoded"
        elif number == 7:  # a corrupt DICOM
            dicom.write_bytes(b"DICM truncated")
            fakes["dicom"].left_out[image_id] = "cannot be read"
        elif number == 11:  # a DICOM without row in train-rle.csv
            rle_rows.pop()
            fakes["dicom"].left_out[image_id] = "no row"
        else:
            fakes["dicom"].examples[image_id] = FakeExample(["no_pneumothorax", "pneumothorax"][pneumothorax],
                                                            patient, image, mask)
    lines = ["ImageId, EncodedPixels"] + [f"{image_id}, {encoded}" for image_id, encoded in rle_rows]
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    pd.DataFrame(png_rows[:8]).to_csv(root / "stage_1_train_images.csv", index=False)
    pd.DataFrame(png_rows[8:]).to_csv(root / "stage_1_test_images.csv", index=False)
    return fakes


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "dummy_data"
    shutil.rmtree(target, ignore_errors=True)
    write_fake_download(target)
