"""What the TFDS builders of hand-downloaded datasets (``datasets/<name>/``) share.

Each builder reads the download as it comes from the dataset's official page (``dl_manager.manual_dir``, mtunet's
``data_dir``) and writes every example into one ``"train"`` split with the features of ``mtunet.data.tfds_source``:
``id``, ``patient`` (the group that must stay in one split: patient, lesion; empty when each example is its own
group), ``image``, ``mask`` (0/1, or class values 0..K for a builder declaring ``MASK_CLASSES`` of K >= 2 names) and
``label``. Images and masks are stored shrunk to the config's ``max_side``, so
training never decodes a full-size original. A dataset published with its own train / validation / test split (a
challenge's) keeps it: ``_read_example`` gives each example's ``split``, recorded as ``info.metadata["splits"]``
(``{split: [id, ...]}``), which ``load_dataset`` uses for hold-out runs.

A missing file or folder stops preparing with one line naming the expected path, the download that provides it and
its page. An example that cannot be used (corrupt image, no mask, no label) is logged with its id, left out, and
recorded as ``[id, reason]`` in ``info.metadata["left_out"]``, which ``mtunet data inspect`` lists.
"""

import abc
import dataclasses
import inspect
import logging

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds
from etils import epath

from mtunet.data.images import BINARY_MASK_CLASSES, MaskError, mask_values, read_image, shrink
from mtunet.data.problems import name_some
from mtunet.data.splits import SPLIT_NAMES
from mtunet.errors import DataError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Source:
    """A file or folder of a download: ``path`` relative to the download folder, the ``download`` (archive or file
    name) that provides it, and the ``page`` to get it from."""

    path: str
    download: str
    page: str

    def missing_message(self, root) -> str:
        where = root / self.path
        return f"{where} not found: expected {self.path} from {self.download} ({self.page})"


def require(root, *sources: Source, folder: bool = False):
    """The path of the first of ``sources`` that exists under ``root`` (a folder if ``folder``, else a file).

    Raises ``DataError`` naming the expected path, the download that provides it and its page (every alternative
    when several are given).
    """
    for source in sources:
        path = root / source.path
        if path.is_dir() if folder else path.is_file():
            return path
    raise DataError("; or ".join(source.missing_message(root) for source in sources))


def read_table(path, columns, source: Source):
    """``path`` read as a CSV (comma- or, as spreadsheets re-save them in many locales, semicolon-separated) with every
    column stripped of spaces and read as text; ``DataError`` unless it has ``columns``."""
    try:
        with open(path, encoding="utf-8") as file:
            header = file.readline()
        separator = ";" if header.count(";") > header.count(",") else ","
        table = pd.read_csv(str(path), sep=separator, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path} cannot be read as CSV ({type(error).__name__}); expected {source.path} from "
                        f"{source.download} ({source.page})") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path} has no column(s) {', '.join(missing)}; expected the columns {', '.join(columns)} "
                        f"of {source.download} ({source.page})")
    return table.apply(lambda column: column.str.strip())


class Unusable(Exception):
    """An example of the download that cannot be used; the message says why, e.g. ``"image cannot be read"``."""


def read_colour_pair(image_path, mask_path, image_format: str, mask_format: str):
    """``(image (H, W, 3), mask)`` of one example; ``Unusable`` naming the expected format (e.g. ``"JPEG"``) of the
    file that cannot be read, or of an image with fewer than 3 channels."""
    image = read_image(str(image_path))
    if image is None or image.ndim != 3:
        raise Unusable(f"image cannot be read as a 3-channel {image_format}")
    mask = read_image(str(mask_path))
    if mask is None:
        raise Unusable(f"mask cannot be read as a {mask_format}")
    return image[..., :3], mask


@dataclasses.dataclass
class ManualConfig(tfds.core.BuilderConfig):
    """A builder config; ``max_side``: longer side of the stored images and masks (None: as downloaded)."""

    max_side: int | None = None


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders in ``datasets/<name>/``: subclasses declare the data, this class checks and stores it.

    A subclass sets ``MANUAL_DOWNLOAD_INSTRUCTIONS``, ``IMAGE_CHANNELS`` (1 or 3) and ``IMAGE_ENCODING`` (``"png"``
    or ``"jpeg"``), optionally ``MASK_CLASSES`` (the names of mask values 1..K; default binary masks) and
    ``TARGET_COLUMNS`` (further targets, declared as a folder dataset's ``columns.json`` declares them, see
    ``mtunet.data.targets``: each is stored as text under ``targets/<column>``, empty where missing), ``LABEL_KIND``
    (``"ordinal"`` when the labels are grades in the order of ``_class_names()``), and implements
    ``_class_names()``, ``_find_examples(root)`` and ``_read_example(id, found)``.
    """

    IMAGE_CHANNELS = 3
    IMAGE_ENCODING = "png"
    MASK_CLASSES = BINARY_MASK_CLASSES
    TARGET_COLUMNS: dict = {}
    LABEL_KIND = "categorical"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # TFDS looks for README.md and CITATIONS.bib in the builder's package; a datasets/<name>/ module has none.
        cls.pkg_dir_path = epath.Path(inspect.getfile(cls)).parent

    @abc.abstractmethod
    def _class_names(self) -> list[str]:
        """The label names of the current config."""

    @abc.abstractmethod
    def _find_examples(self, root) -> list[tuple[str, object]]:
        """``[(id, found), ...]`` of the download in ``root``, in a fixed order.

        Raises ``DataError`` (see ``require``) for a missing file or folder; calls ``self.leave_out(id, reason)`` for
        examples that can be seen to be unusable from the listing alone.
        """

    @abc.abstractmethod
    def _read_example(self, example_id: str, found) -> dict | None:
        """``{"patient", "image", "mask", "label"}`` of one example as downloaded: image ``(H, W[, C])``, mask
        ``(H, W)`` with lesion > 0 (class values 0..K with ``MASK_CLASSES`` of K >= 2), label a class name,
        ``targets`` (``{column: text}`` of ``TARGET_COLUMNS``, ``""`` where missing) for a builder with them, and
        ``split`` (one of ``SPLIT_NAMES``) for a dataset published with its own split; None if
        the config does not take it (e.g. a slice without tumour when labels are per patient), counted in
        ``info.metadata["outside_config"]``. Raises ``Unusable`` for a corrupt or inconsistent one."""

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "id": tfds.features.Text(),
            "patient": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, self.IMAGE_CHANNELS), encoding_format=self.IMAGE_ENCODING),
            "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=self._class_names()),
        }
        if self.TARGET_COLUMNS:
            features["targets"] = tfds.features.FeaturesDict(
                {column: tfds.features.Text() for column in self.TARGET_COLUMNS})
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def leave_out(self, example_id: str, reason: str) -> None:
        """Logs that ``example_id`` is left out for ``reason`` and records it with the dataset."""
        logger.warning("%s: leaving out %s: %s", self.name, example_id, reason)
        self._left_out.append([example_id, reason])

    def _split_generators(self, dl_manager):
        self._left_out = []
        found = self._find_examples(dl_manager.manual_dir)
        if not found:
            raise DataError(f"{dl_manager.manual_dir} holds no example of {self.name}; expected the layout in "
                            f"datasets/{self.name}/README.md")
        return {"train": self._generate_examples(found)}

    def _generate_examples(self, found):
        outside, splits = 0, {}
        for example_id, item in found:
            try:
                example = self._read_example(example_id, item)
                if example is None:
                    outside += 1
                    continue
                example = self._stored_example(example)
            except Unusable as error:
                self.leave_out(example_id, str(error))
                continue
            if "split" in example:
                splits.setdefault(example.pop("split"), []).append(example_id)
            yield example_id, {"id": example_id, **example}
        self.info.metadata.update(left_out=self._left_out, outside_config=outside)
        if splits:
            self.info.metadata["splits"] = {name: splits.get(name, []) for name in SPLIT_NAMES}
        if self._left_out:
            logger.warning("%s: %d example(s) left out: %s", self.name, len(self._left_out),
                           name_some(example_id for example_id, _ in self._left_out))

    def _stored_example(self, example: dict) -> dict:
        """The example as stored: image ``(h, w, IMAGE_CHANNELS)`` and mask ``(h, w, 1)`` (0/1, or class values for
        ``MASK_CLASSES`` of 2 or more) shrunk to ``max_side``."""
        image, mask = example["image"], example["mask"]
        if image.shape[:2] != mask.shape[:2]:
            raise Unusable(f"mask is {mask.shape[0]}x{mask.shape[1]} px, its image {image.shape[0]}x{image.shape[1]}")
        image = image.reshape(*image.shape[:2], -1)
        if image.shape[2] != self.IMAGE_CHANNELS or image.dtype != np.uint8:
            raise Unusable(f"image has {image.shape[2]} channel(s) of {image.dtype}; expected {self.IMAGE_CHANNELS} "
                           "of uint8")
        try:
            mask = mask_values(mask, len(self.MASK_CLASSES))
        except MaskError as bad:
            raise Unusable(f"mask does not hold the values of MASK_CLASSES ({bad})") from None
        max_side = self.builder_config.max_side
        if max_side is not None:
            image = shrink(image, max_side, nearest=False)
            mask = shrink(mask, max_side, nearest=True)
        return {**example, "image": image, "mask": mask}
