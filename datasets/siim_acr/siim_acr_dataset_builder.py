"""TFDS builder ``siim_acr``: chest X-rays of the SIIM-ACR Pneumothorax Segmentation challenge, labelled
pneumothorax yes or no from their mask.

Two sources: the challenge's DICOMs with ``train-rle.csv`` (configs ``dicom_*``, grouped by the DICOM PatientID),
and the common PNG conversion (``png_*``; no patient ids, each image its own group). Images and masks are stored with
their longer side at most 512 or 1024 px.
"""

import dataclasses

import numpy as np
import pydicom
import tensorflow_datasets as tfds

from mtunet.data.images import read_image, to_rgb_or_gray, to_uint8
from mtunet.data.manual import ManualBuilder, ManualConfig, Source, Unusable, read_table, require

CHALLENGE_PAGE = "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation"
PNG_PAGE = "https://www.kaggle.com/datasets/vbookshelf/pneumothorax-chest-xray-images-and-masks"
CHALLENGE_DOWNLOAD = "the SIIM-ACR challenge's training data (dicom-images-train.zip and train-rle.csv)"
PNG_DOWNLOAD = "the Kaggle dataset vbookshelf/pneumothorax-chest-xray-images-and-masks (siim-acr-pneumothorax/)"
DICOMS = Source("dicom-images-train", CHALLENGE_DOWNLOAD, CHALLENGE_PAGE)
RLE_TABLE = Source("train-rle.csv", CHALLENGE_DOWNLOAD, CHALLENGE_PAGE)
PNG_IMAGES = Source("png_images", PNG_DOWNLOAD, PNG_PAGE)
PNG_MASKS = Source("png_masks", PNG_DOWNLOAD, PNG_PAGE)
PNG_TABLES = (Source("stage_1_train_images.csv", PNG_DOWNLOAD, PNG_PAGE),
              Source("stage_1_test_images.csv", PNG_DOWNLOAD, PNG_PAGE))

CLASS_NAMES = ["no_pneumothorax", "pneumothorax"]


def decode_rle(encoded: str, height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool mask of one ``EncodedPixels`` value of SIIM's relative run-length encoding.

    The value is pairs ``gap length``: each run of mask pixels starts ``gap`` pixels after the end of the previous
    run (the first one after pixel 0), pixels numbered down each column in turn (column-major). ``"-1"`` is an empty
    mask. ``ValueError`` for a malformed value. (No library decodes this variant; COCO's RLE counts are absolute.)
    """
    if encoded.strip() == "-1":
        return np.zeros((height, width), bool)
    numbers = np.array(encoded.split(), dtype=np.int64)
    if numbers.size == 0 or numbers.size % 2 or np.any(numbers < 0):
        raise ValueError(f"expected pairs of non-negative gap and length, received {encoded[:40]!r}")
    gaps, lengths = numbers[0::2], numbers[1::2]
    ends = np.cumsum(gaps + lengths)
    if ends[-1] > height * width:
        raise ValueError(f"runs end at pixel {ends[-1]}, beyond the {height}x{width} image")
    edges = np.zeros(height * width + 1, np.int64)
    np.add.at(edges, ends - lengths, 1)
    np.add.at(edges, ends, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape(width, height).T


def files_under(folder, suffix: str):
    """Every file under ``folder`` (at any depth) whose name ends with ``suffix`` (epath has no recursive glob)."""
    for path in folder.iterdir():
        if path.is_dir():
            yield from files_under(path, suffix)
        elif path.name.endswith(suffix):
            yield path


@dataclasses.dataclass
class SiimConfig(ManualConfig):
    """``source``: ``"dicom"`` (challenge DICOMs and train-rle.csv) or ``"png"`` (the PNG conversion)."""

    source: str = "dicom"


class Builder(ManualBuilder):
    """SIIM-ACR chest X-rays with pneumothorax masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "DICOM and PNG sources, stored at 512 and 1024 px."}
    BUILDER_CONFIGS = [
        SiimConfig(name=f"{source}_{side}", source=source, max_side=side, description=f"{what}, longer side {side} px")
        for source, what in (("dicom", "challenge DICOMs with train-rle.csv, grouped by PatientID"),
                             ("png", "PNG conversion (png_images, png_masks)"))
        for side in (512, 1024)
    ]
    IMAGE_CHANNELS = 1
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Config dicom_512 / dicom_1024: the challenge's training data ({CHALLENGE_PAGE}), unzipped:
      dicom-images-train/<study>/<series>/<ImageId>.dcm
      train-rle.csv                      ImageId, EncodedPixels (-1: no pneumothorax; several rows per image merged)
    Config png_512 / png_1024: the PNG conversion ({PNG_PAGE}); give its siim-acr-pneumothorax/ folder:
      png_images/<new_filename>  png_masks/<new_filename>
      stage_1_train_images.csv, stage_1_test_images.csv   new_filename,ImageId,has_pneumo
    """

    def _class_names(self) -> list[str]:
        return CLASS_NAMES

    def _find_examples(self, root):
        return self._find_dicoms(root) if self.builder_config.source == "dicom" else self._find_pngs(root)

    def _find_dicoms(self, root):
        dicoms = require(root, DICOMS, folder=True)
        table = read_table(require(root, RLE_TABLE), ["ImageId", "EncodedPixels"], RLE_TABLE)
        encodings = table.groupby("ImageId", sort=False)["EncodedPixels"].agg(list).to_dict()
        found = []
        for path in sorted(files_under(dicoms, ".dcm"), key=lambda path: path.stem):
            if path.stem not in encodings:
                self.leave_out(path.stem, f"no row in {RLE_TABLE.path}")
            else:
                found.append((path.stem, {"dicom": path, "encodings": encodings[path.stem]}))
        return found

    def _find_pngs(self, root):
        images = require(root, PNG_IMAGES, folder=True)
        masks = require(root, PNG_MASKS, folder=True)
        tables = [read_table(require(root, PNG_TABLES[0]), ["new_filename", "ImageId"], PNG_TABLES[0])]
        if (root / PNG_TABLES[1].path).is_file():
            tables.append(read_table(root / PNG_TABLES[1].path, ["new_filename", "ImageId"], PNG_TABLES[1]))
        found = []
        for table in tables:
            for row in table.itertuples(index=False):
                image, mask = images / row.new_filename, masks / row.new_filename
                if not image.is_file():
                    self.leave_out(row.ImageId, f"no image {PNG_IMAGES.path}/{row.new_filename}")
                elif not mask.is_file():
                    self.leave_out(row.ImageId, f"no mask {PNG_MASKS.path}/{row.new_filename}")
                else:
                    found.append((row.ImageId, {"image": image, "mask": mask}))
        return sorted(found, key=lambda item: item[0])

    def _read_example(self, example_id, found):
        if "dicom" in found:
            return self._read_dicom(found)
        image, mask = read_image(str(found["image"])), read_image(str(found["mask"]))
        if image is None:
            raise Unusable("image cannot be read as a PNG")
        if mask is None:
            raise Unusable("mask cannot be read as a PNG")
        return {"patient": "", "image": to_rgb_or_gray(to_uint8(image)), "mask": mask,
                "label": CLASS_NAMES[int(mask.max() > 0)]}

    def _read_dicom(self, found):
        try:
            dataset = pydicom.dcmread(str(found["dicom"]))
            pixels = dataset.pixel_array
        except (pydicom.errors.InvalidDicomError, AttributeError, ValueError, KeyError, OSError) as error:
            raise Unusable(f"DICOM cannot be read ({type(error).__name__})") from None
        if pixels.ndim != 2:
            raise Unusable(f"DICOM pixels are {pixels.shape}; expected one grayscale image")
        if dataset.get("PhotometricInterpretation") == "MONOCHROME1":  # 0 is white
            pixels = pixels.max() - pixels
        try:
            mask = np.logical_or.reduce([decode_rle(encoded, *pixels.shape) for encoded in found["encodings"]])
        except ValueError as error:
            raise Unusable(f"EncodedPixels cannot be decoded: {error}") from None
        return {"patient": str(dataset.get("PatientID", "")), "image": to_uint8(pixels), "mask": mask,
                "label": CLASS_NAMES[int(mask.any())]}
