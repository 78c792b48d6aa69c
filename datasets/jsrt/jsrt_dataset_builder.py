"""TFDS builder ``jsrt``: the JSRT chest radiographs (247 images, 154 with one lung nodule, 93 without) as the public
Kaggle copy lays them out (``jsrt_metadata.csv`` and PNG images), labelled by nodule state, with the nodule's
subtlety, diagnosis, size and position as further targets (the Res-MTNet paper's tasks).

Configs ``nodule_*``: the mask is the nodule, a disc of its recorded size (mm, at JSRT's 0.175 mm pixels) at its
recorded position; empty for an image without nodule. Config ``lungs_512``: the mask is both lungs, from the SCR
annotations (van Ginneken et al.) where the download has them; images without them are left out.
"""

import dataclasses
import math

import cv2
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mtunet.data.images import read_image, to_uint8
from mtunet.data.manual import ManualBuilder, ManualConfig, Source, Unusable, read_table, require

PAGE = "https://www.kaggle.com/datasets/raddar/nodules-in-chest-xrays-jsrt"
DOWNLOAD = "the Kaggle copy of JSRT (raddar/nodules-in-chest-xrays-jsrt)"
SCR_PAGE = "https://www.isi.uu.nl/Research/Databases/SCR/"
METADATA = Source("jsrt_metadata.csv", DOWNLOAD, PAGE)
IMAGES = (Source("images/images", DOWNLOAD, PAGE), Source("images", DOWNLOAD, PAGE))
SCR_MASKS = Source("scratch", "the SCR lung annotations (scratch/fold1, scratch/fold2)", SCR_PAGE)
SCR_LUNGS = ("left lung", "right lung")

CLASS_NAMES = ["non-nodule", "benign", "malignant"]
COLUMNS = ["study_id", "subtlety", "size", "x", "y", "state", "diagnosis"]
MISSING = ("", "?", "nan")  # how the metadata writes a value an image without nodule does not have
PIXEL_MM = 0.175  # JSRT's pixel pitch: 2048 x 2048 pixels of 0.175 mm
ORIGINAL_SIDE = 2048  # x and y are pixel positions on the original 2048 px image


@dataclasses.dataclass
class JsrtConfig(ManualConfig):
    """``mask``: ``"nodule"`` (a disc from the metadata) or ``"lungs"`` (the SCR annotations)."""

    mask: str = "nodule"


def state_class(state: str) -> str | None:
    """The class of a ``state`` value (``"non-nodule"``, ``"benign"``, ``"malignant"``, any case or spacing), or
    None."""
    state = state.strip().lower().replace(" ", "-")
    state = "non-nodule" if state in ("non-nodule", "nonnodule", "non_nodule") else state
    return state if state in CLASS_NAMES else None


def nodule_disc(shape, x: float, y: float, size_mm: float) -> np.ndarray:
    """``shape`` bool mask of a disc of diameter ``size_mm`` centred at (``x``, ``y``) in 2048 px coordinates, at the
    image's own scale: the pixels within the radius (at least 1 px) of the centre, both rounded to pixels."""
    scale = shape[1] / ORIGINAL_SIDE
    radius = max(1, round(size_mm / PIXEL_MM / 2 * scale))
    rows, columns = np.ogrid[:shape[0], :shape[1]]
    return (rows - round(y * scale)) ** 2 + (columns - round(x * scale)) ** 2 <= radius ** 2


def _value(text: str) -> str:
    """A metadata cell as a target: missing markers empty, whole numbers without their decimals (``5.0`` -> ``5``)."""
    text = text.strip()
    if text.lower() in MISSING:
        return ""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if math.isfinite(number) and number == int(number) else text


class Builder(ManualBuilder):
    """JSRT chest radiographs, labelled by nodule state, with nodule subtlety, diagnosis, size and position."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The Kaggle copy: nodule discs at 512 and 1024 px, SCR lungs at 512 px."}
    BUILDER_CONFIGS = [
        JsrtConfig(name="nodule_512", max_side=512, mask="nodule", description="nodule disc masks, 512 px"),
        JsrtConfig(name="nodule_1024", max_side=1024, mask="nodule", description="nodule disc masks, 1024 px"),
        JsrtConfig(name="lungs_512", max_side=512, mask="lungs", description="SCR lung masks, 512 px"),
    ]
    IMAGE_CHANNELS = 1
    TARGET_COLUMNS = {
        "subtlety": {"kind": "ordinal", "classes": ["1", "2", "3", "4", "5"]},
        "diagnosis": {"kind": "categorical"},
        "size": {"kind": "continuous"},
        "x": {"kind": "continuous", "head": "position"},
        "y": {"kind": "continuous", "head": "position"},
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download the Kaggle copy of JSRT ({PAGE}) and unzip it; give the folder that holds:
      jsrt_metadata.csv        study_id (the image file), subtlety, size, age, sex, x, y, state, diagnosis
      images/<study_id>        e.g. images/JPCLN001.png (or images/images/ as the archive nests it)
    Config lungs_512 also needs the SCR lung masks ({SCR_PAGE}) beside them:
      scratch/fold1/masks/left lung/<id>.gif, .../right lung/<id>.gif, and likewise scratch/fold2/
    """

    def _class_names(self) -> list[str]:
        return CLASS_NAMES

    def _find_examples(self, root):
        table = read_table(require(root, METADATA), COLUMNS, METADATA)
        images = require(root, *IMAGES, folder=True)
        lungs = self._scr_masks(root) if self.builder_config.mask == "lungs" else None
        found = []
        for row in sorted(table.to_dict("records"), key=lambda row: row["study_id"]):
            name = row["study_id"] if "." in row["study_id"] else f"{row['study_id']}.png"
            path = images / name
            example_id = path.stem
            if not path.is_file():
                self.leave_out(example_id, f"no image {path.relative_to(root)}")
            elif state_class(row["state"]) is None:
                self.leave_out(example_id, f"state {row['state']!r} is none of {', '.join(CLASS_NAMES)}")
            elif lungs is not None and example_id not in lungs:
                self.leave_out(example_id, f"no SCR lung masks under {SCR_MASKS.path}/")
            else:
                found.append((example_id, {"image": path, "row": row, "lungs": lungs and lungs[example_id]}))
        return found

    @staticmethod
    def _scr_masks(root) -> dict[str, list]:
        """``{id: [left lung file, right lung file]}`` of the SCR annotations under ``scratch/``."""
        folder = require(root, SCR_MASKS, folder=True)
        masks = {}
        for fold in sorted(path for path in folder.iterdir() if path.is_dir()):
            left = fold / "masks" / SCR_LUNGS[0]
            if not left.is_dir():
                continue
            for path in sorted(left.iterdir()):
                right = fold / "masks" / SCR_LUNGS[1] / path.name
                if path.suffix.lower() == ".gif" and right.is_file():
                    masks[path.stem] = [path, right]
        return masks

    def _read_example(self, example_id, found):
        image = read_image(str(found["image"]))
        if image is None or image.ndim != 2:
            raise Unusable("image cannot be read as a grayscale PNG")
        row = found["row"]
        targets = {column: _value(row[column]) for column in self.TARGET_COLUMNS}
        label = state_class(row["state"])
        if found["lungs"] is not None:
            mask = self._lung_mask(found["lungs"], image.shape)
        elif label == "non-nodule":
            mask = np.zeros(image.shape, bool)
        else:
            try:
                mask = nodule_disc(image.shape, float(row["x"]), float(row["y"]), float(row["size"]))
            except ValueError:
                raise Unusable(f"a {label} nodule needs numbers x, y and size; received {row['x']!r}, "
                               f"{row['y']!r}, {row['size']!r}") from None
        return {"patient": "", "image": to_uint8(image), "mask": mask, "label": label, "targets": targets}

    @staticmethod
    def _lung_mask(paths, shape) -> np.ndarray:
        """Both lungs' SCR masks (GIF, at half JSRT's resolution) united and resized to ``shape``."""
        try:
            lungs = np.logical_or(*[np.asarray(Image.open(str(path))) > 0 for path in paths])
        except OSError:
            raise Unusable("SCR lung mask cannot be read as a GIF") from None
        return cv2.resize(lungs.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
