"""``load_dataset``: one call from a dataset name to splits, facts about the data and ``tf.data`` pipelines."""

import dataclasses
import logging
from pathlib import Path

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from mtunet.data.registry import get_dataset
from mtunet.data.splits import SPLIT_NAMES, Splits, check_split_options, make_splits
from mtunet.data.store import ExampleStore
from mtunet.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about a loaded dataset.

    Attributes:
        name: registry name of the dataset.
        class_names: class of each label index.
        num_classes: ``len(class_names)``.
        channels: 1 (grayscale) or 3 (RGB) channels of the served images.
        image_size: side of the square served images.
        split_sizes: ``{split: number of examples}``.
        class_counts: ``{split: {class name: number of examples}}``.
        num_groups: number of patients (of examples, when no patient ids are known).
        skipped: ``[(file, reason), ...]`` left out with ``skip_bad_files``.
    """

    name: str
    class_names: list[str]
    num_classes: int
    channels: int
    image_size: int
    split_sizes: dict[str, int]
    class_counts: dict[str, dict[str, int]]
    num_groups: int
    skipped: list[tuple[str, str]]

    def to_dict(self) -> dict:
        """The fields as JSON-serialisable values (``skipped`` as a list of ``[file, reason]``)."""
        record = dataclasses.asdict(self)
        record["skipped"] = [list(entry) for entry in self.skipped]
        return record


class LoadedDataset:
    """A dataset decoded in memory with its splits: what training and evaluation read. Made by ``load_dataset``.

    Attributes:
        info: a ``DatasetInfo``.
        splits: the ``Splits`` in use.
    """

    def __init__(self, name: str, store: ExampleStore, splits: Splits, image_size: int):
        self._store = store
        self.splits = splits
        position = {example: index for index, example in enumerate(store.ids.tolist())}
        self._positions = {split: np.sort([position[example] for example in splits[split]]).astype(np.int64)
                           for split in SPLIT_NAMES}
        self.info = DatasetInfo(
            name=name,
            class_names=list(store.class_names),
            num_classes=len(store.class_names),
            channels=int(store.channels),
            image_size=int(image_size),
            split_sizes={split: int(len(self._positions[split])) for split in SPLIT_NAMES},
            class_counts={split: self._class_counts(split) for split in SPLIT_NAMES},
            num_groups=int(store.num_groups),
            skipped=list(store.skipped),
        )

    def __repr__(self):
        return f"LoadedDataset({self.info.name!r}, {self.splits!r})"

    def _split_positions(self, split: str) -> np.ndarray:
        if split not in self._positions:
            raise ConfigError(f"unknown split {split!r}; expected one of: {', '.join(SPLIT_NAMES)}")
        return self._positions[split]

    def _class_counts(self, split: str) -> dict[str, int]:
        counts = np.bincount(self.labels(split), minlength=len(self._store.class_names))
        return {name: int(count) for name, count in zip(self._store.class_names, counts)}

    def ids(self, split: str) -> list[str]:
        """Example ids of ``split``, in dataset order: the order of ``pipeline(split, training=False)``."""
        return self._store.ids[self._split_positions(split)].tolist()

    def labels(self, split: str) -> np.ndarray:
        """``(N,)`` int class indices of ``split``, in the order of ``pipeline(split, training=False)``."""
        return self._store.labels[self._split_positions(split)]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, masks, labels)`` of ``split`` as ``uint8`` ``(N, S, S, C)``, ``uint8`` ``(N, S, S, 1)`` of 0/1
        and int ``(N,)``, in the order of ``pipeline(split, training=False)``."""
        positions = self._split_positions(split)
        return self._store.images[positions], self._store.masks[positions], self._store.labels[positions]

    def pipeline(self, split: str, *, batch_size: int, training: bool, augment: bool = True, seed: int = 0,
                 drop_remainder: bool = False):
        """A ``tf.data.Dataset`` of ``(images, {"label": one_hot, "mask": masks})`` batches of ``split``.

        Images are float32 ``(B, S, S, C)`` raw 0-255, labels float32 ``(B, num_classes)``, masks float32
        ``(B, S, S, 1)`` of 0/1. ``training=True`` shuffles from ``seed`` (anew each epoch) and augments if
        ``augment``; ``training=False`` keeps the order of ``ids(split)`` and never augments. Not repeated.
        """
        from mtunet.data.pipeline import build_pipeline

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; received {batch_size!r}")
        images, masks, labels = self.arrays(split)
        return build_pipeline(images, masks, labels, num_classes=self.info.num_classes, batch_size=int(batch_size),
                              training=training, augment=augment, seed=seed, drop_remainder=drop_remainder)

    def class_weights(self) -> np.ndarray:
        """``(num_classes,)`` weights inversely proportional to class frequency in the train split ("balanced")."""
        labels = self.labels("train")
        absent = [name for index, name in enumerate(self.info.class_names) if not np.any(labels == index)]
        if absent:
            raise DataError(f"the train split of {self.info.name} has no example of class(es) {', '.join(absent)}; "
                            "expected every class in train to weight classes")
        return compute_class_weight("balanced", classes=np.arange(self.info.num_classes), y=labels)


def load_dataset(name: str, *, data_dir=None, image_size: int = 224, seed: int = 0, splits_path=None,
                 validation_fraction: float = 0.15, test_fraction: float = 0.15, fold: int | None = None,
                 num_folds: int | None = None, skip_bad_files: bool = False) -> LoadedDataset:
    """Reads a dataset, decodes it at ``image_size`` and splits it by patient, stratified by class.

    Args:
        name: a name from ``mtunet.data.DATASETS``: ``"synthetic"`` or ``"folder"``.
        data_dir: the folder of a ``"folder"`` dataset; for TFDS datasets such as ``"synthetic"``, the TFDS data
            directory (None: TFDS's default).
        image_size: side of the square images served (aspect ratio kept by zero padding).
        seed: seed of the split.
        splits_path: a splits JSON file: read if it exists (and checked against the dataset's ids), else the
            splits made here are written to it.
        validation_fraction: share of the dataset for validation (default 0.15).
        test_fraction: share of the dataset for test in a hold-out split (default 0.15; unused with ``fold``).
        fold, num_folds: K-fold cross-validation, fold ``fold`` (0-based) of ``num_folds`` being the test split.
        skip_bad_files: leave bad files out (listed in ``info.skipped``) instead of raising ``DataError``.

    Examples::

        ds = load_dataset("folder", data_dir="data/busbra", image_size=224, splits_path="runs/splits.json")
        model.fit(ds.pipeline("train", batch_size=16, training=True),
                  validation_data=ds.pipeline("validation", batch_size=16, training=False))
    """
    spec = get_dataset(name)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer; received {image_size!r}")
    check_split_options(validation_fraction, test_fraction, fold, num_folds)
    if spec.needs_data_dir and data_dir is None:
        raise ConfigError(f"dataset {name!r} needs data_dir (--data-dir): {spec.description}")
    store = spec.read(data_dir, image_size=int(image_size), skip_bad_files=skip_bad_files)
    if splits_path is not None and Path(splits_path).exists():
        splits = Splits.load(splits_path)
        splits.check(store.ids.tolist(), str(splits_path))
        logger.info("splits read from %s", splits_path)
    else:
        splits = make_splits(store.ids, store.labels, store.groups, grouped=store.grouped, dataset=name, seed=seed,
                             validation_fraction=validation_fraction, test_fraction=test_fraction, fold=fold,
                             num_folds=num_folds)
        if splits_path is not None:
            splits.save(splits_path)
    return LoadedDataset(name, store, splits, int(image_size))
