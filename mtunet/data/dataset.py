"""``load_dataset``: one call from a dataset name to splits, facts about the data and ``tf.data`` pipelines."""

import atexit
import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from mtunet.data.images import BINARY_MASK_CLASSES
from mtunet.data.registry import DATASETS, get_dataset
from mtunet.data.splits import SPLIT_NAMES, Splits, check_split_options, make_splits, published_splits
from mtunet.data.store import ExampleStore, check_memory_limit, example_bytes
from mtunet.data.targets import MISSING_CLASS, TargetHead
from mtunet.errors import ConfigError, DataError
from mtunet.options import check_allow_missing

logger = logging.getLogger(__name__)

# Streamed training splits shuffle in a buffer of as many examples as the memory limit holds, but at least this many.
MIN_SHUFFLE_BUFFER = 1000


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
        skipped: ``[(file, reason), ...]``: every file left out (bad files with ``skip_bad_files``, files that are
            not images, masks without an image).
        storage: ``"memory"`` (decoded examples held in memory) or ``"stream"`` (decoded from the files, then
            cached in a file, per split).
        mask_classes: names of the mask's foreground classes: mask value ``i + 1`` is ``mask_classes[i]``, 0 is
            background. ``BINARY_MASK_CLASSES`` (``("lesion",)``, the default) for binary 0/1 masks; 2 or more names
            for multi-class masks of class values 0..K. With ``multilabel_masks``, the lesion types, one binary mask
            channel each (``l`` is ``mask_classes[l]``).
        target_heads: the further targets' ``TargetHead`` s (a folder dataset's ``columns.json``), each learnt by a
            head of that name; ``()`` for none.
        missing_masks: ``{split: number of images without a mask}`` (``allow_missing=("mask",)``); ``{}`` when every
            image has one.
        label_kind: ``"categorical"``, or ``"ordinal"`` when the labels are grades in the order of ``class_names``
            (``columns.json``'s ``"label"`` entry, or the builder's ``LABEL_KIND``).
        missing_labels: ``{split: number of images without a label}`` (``allow_missing=("label",)``), likewise;
            ``class_counts`` count the labelled ones.
        multilabel_masks: whether masks are multi-label: one binary channel per lesion type of ``mask_classes``,
            which may overlap (a folder dataset's ``masks/<lesion type>/`` sub-folders).
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
    storage: str
    mask_classes: tuple[str, ...] = BINARY_MASK_CLASSES
    target_heads: tuple[TargetHead, ...] = ()
    missing_masks: dict[str, int] = dataclasses.field(default_factory=dict)
    missing_labels: dict[str, int] = dataclasses.field(default_factory=dict)
    label_kind: str = "categorical"
    multilabel_masks: bool = False

    @property
    def multiclass_masks(self) -> bool:
        """Whether masks hold class values 0..K with K >= 2 (False: binary 0/1 masks, or multi-label masks)."""
        return len(self.mask_classes) > 1 and not self.multilabel_masks

    def to_dict(self) -> dict:
        """The fields as JSON-serialisable values (``skipped`` as a list of ``[file, reason]``, ``mask_classes`` as
        a list, ``target_heads`` as a list of ``TargetHead.to_dict()``)."""
        record = dataclasses.asdict(self)
        record["skipped"] = [list(entry) for entry in self.skipped]
        record["mask_classes"] = list(self.mask_classes)
        record["target_heads"] = [head.to_dict() for head in self.target_heads]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "DatasetInfo":
        """The ``DatasetInfo`` that ``to_dict`` gave ``record`` (e.g. a run's ``config.json`` ``"dataset"``).

        A record without ``mask_classes`` (written before masks could be multi-class) is binary, one without
        ``target_heads`` has none, one without ``missing_masks`` or ``missing_labels`` has every mask and label, one
        without ``multilabel_masks`` has masks of one channel.
        ``ConfigError`` if a field is missing or unknown.
        """
        fields = [field.name for field in dataclasses.fields(cls)]
        optional = ("mask_classes", "target_heads", "missing_masks", "missing_labels", "label_kind", "multilabel_masks")
        missing = [name for name in fields if name not in record and name not in optional]
        if missing:
            raise ConfigError(f"dataset record lacks {', '.join(missing)}; expected the fields of "
                              "DatasetInfo.to_dict()")
        unknown = [name for name in record if name not in fields]
        if unknown:
            raise ConfigError(f"dataset record has unknown field(s) {', '.join(unknown)}; expected the fields of "
                              "DatasetInfo.to_dict()")
        return cls(**{**record, "skipped": [tuple(entry) for entry in record["skipped"]],
                      "mask_classes": tuple(record.get("mask_classes", BINARY_MASK_CLASSES)),
                      "target_heads": tuple(map(TargetHead.from_dict, record.get("target_heads", ())))})


class LoadedDataset:
    """A decoded dataset with its splits: what training and evaluation read. Made by ``load_dataset``.

    Attributes:
        info: a ``DatasetInfo``.
        splits: the ``Splits`` in use.
    """

    def __init__(self, name: str, store: ExampleStore, splits: Splits, *, memory_limit: int, cache_dir=None):
        self._store = store
        self._memory_limit = memory_limit
        self._cache_parent = cache_dir
        self._cache_dir = None
        self._cached_splits = set()
        self.splits = splits
        position = {example: index for index, example in enumerate(store.ids.tolist())}
        self._positions = {split: np.sort([position[example] for example in splits[split]]).astype(np.int64)
                           for split in SPLIT_NAMES}
        self.info = DatasetInfo(
            name=name,
            class_names=list(store.class_names),
            num_classes=len(store.class_names),
            channels=int(store.channels),
            image_size=int(store.image_size),
            split_sizes={split: int(len(self._positions[split])) for split in SPLIT_NAMES},
            class_counts={split: self._class_counts(split) for split in SPLIT_NAMES},
            num_groups=int(store.num_groups),
            skipped=list(store.skipped),
            storage="memory" if store.in_memory else "stream",
            mask_classes=tuple(store.mask_classes),
            target_heads=tuple(store.target_heads),
            missing_masks={split: int(np.sum(~self.mask_present(split))) for split in SPLIT_NAMES
                           if not store.has_masks().all()},
            missing_labels={split: int(np.sum(self.labels(split) == MISSING_CLASS)) for split in SPLIT_NAMES
                            if np.any(store.labels == MISSING_CLASS)},
            label_kind=store.label_kind,
            multilabel_masks=store.multilabel_masks,
        )

    def __repr__(self):
        return f"LoadedDataset({self.info.name!r}, {self.splits!r}, storage={self.info.storage!r})"

    def _split_positions(self, split: str) -> np.ndarray:
        if split not in self._positions:
            raise ConfigError(f"unknown split {split!r}; expected one of: {', '.join(SPLIT_NAMES)}")
        return self._positions[split]

    def _class_counts(self, split: str) -> dict[str, int]:
        labels = self.labels(split)
        counts = np.bincount(labels[labels != MISSING_CLASS], minlength=len(self._store.class_names))
        return {name: int(count) for name, count in zip(self._store.class_names, counts)}

    def ids(self, split: str) -> list[str]:
        """Example ids of ``split``, in dataset order: the order of ``pipeline(split, training=False)``."""
        return self._store.ids[self._split_positions(split)].tolist()

    def labels(self, split: str) -> np.ndarray:
        """``(N,)`` int class indices of ``split`` (``MISSING_CLASS`` where unlabelled), in the order of
        ``pipeline(split, training=False)``."""
        return self._store.labels[self._split_positions(split)]

    def mask_present(self, split: str) -> np.ndarray:
        """``(N,)`` whether each example of ``split`` has a mask, in the order of ``ids(split)``."""
        return self._store.has_masks()[self._split_positions(split)]

    def channels_present(self, split: str) -> np.ndarray:
        """``(N, L)`` whether each example of ``split`` has the mask of each lesion type of multi-label masks, in the
        order of ``ids(split)``; ``(N, 1)``, ``mask_present``, for masks of one channel."""
        if not self.info.multilabel_masks:
            return self.mask_present(split)[:, None]
        return ~np.isnan(self._store.mask_fractions[self._split_positions(split)])  # NaN: that type's mask missing

    def targets(self, split: str) -> dict[str, np.ndarray]:
        """``{head: targets}`` of the further target heads for ``split``, in the order of ``ids(split)``: ``(N,)`` int
        class indices (``MISSING_CLASS`` where missing) or ``(N, columns)`` float values (NaN where missing)."""
        positions = self._split_positions(split)
        return {name: values[positions] for name, values in self._store.targets.items()}

    def target_statistics(self) -> dict[str, tuple[list[float], list[float]]]:
        """``{head: (mean, std)}`` per column of each continuous target head over the train split's present values;
        ``DataError`` for a column with fewer than 2 values or no spread there."""
        statistics, train = {}, self.targets("train")
        for head in self.info.target_heads:
            if not head.continuous:
                continue
            values = train[head.name]
            present = np.sum(~np.isnan(values), axis=0)
            spread = np.array([np.nanstd(column) if count else 0.0 for column, count in zip(values.T, present)])
            flat = [column for column, count, std in zip(head.columns, present, spread) if count < 2 or not std > 0]
            if flat:
                raise DataError(f"the train split of {self.info.name} has fewer than 2 distinct values of column(s) "
                                f"{', '.join(flat)}; expected values to learn head {head.name!r} from")
            statistics[head.name] = (np.nanmean(values, axis=0).tolist(), spread.tolist())
        return statistics

    def target_class_weights(self) -> dict[str, np.ndarray]:
        """``{head: (classes,) weights}`` of each categorical or ordinal target head: sklearn's "balanced" weights of
        the classes the train split's labels hold, 1 (with a warning) for a declared class they lack."""
        weights, train = {}, self.targets("train")
        for head in self.info.target_heads:
            if head.continuous:
                continue
            labels = train[head.name][train[head.name] != MISSING_CLASS]
            held = np.unique(labels)
            weights[head.name] = np.ones(len(head.class_names))
            weights[head.name][held] = compute_class_weight("balanced", classes=held, y=labels)
            absent = [name for index, name in enumerate(head.class_names) if index not in held]
            if absent:
                logger.warning("the train split of %s has no %s label %s: head %s cannot learn it", self.info.name,
                               head.columns[0], ", ".join(absent), head.name)
        return weights

    def groups(self, split: str) -> "np.ndarray | None":
        """``(N,)`` patient id of each example of ``split``, in the order of ``ids(split)``; None when the data
        names no patients (each example is then its own)."""
        return self._store.groups[self._split_positions(split)].astype(str) if self._store.grouped else None

    def table(self, split: str) -> pd.DataFrame:
        """One row per example of ``split``, in the order of ``ids(split)``: ``id``, ``label`` (class name),
        ``group`` (patient), ``height`` and ``width`` of the image as stored, and ``lesion_fraction`` (share of lesion
        pixels, of any mask class, in the stored mask). For multi-class masks, also ``fraction_<mask class>`` per
        mask class (share of the stored mask's pixels of that class); for multi-label masks ``fraction_<lesion
        type>`` per lesion type (NaN where its mask is missing). When some images have no mask, also ``has_mask``
        (their fractions are NaN)."""
        positions = self._split_positions(split)
        store = self._store
        columns = {
            "id": store.ids[positions],
            "label": np.array([*store.class_names, ""], dtype=object)[store.labels[positions]],  # -1: "", unlabelled
            "group": store.groups[positions],
            "height": store.original_sizes[positions, 0],
            "width": store.original_sizes[positions, 1],
            "lesion_fraction": store.lesion_fractions[positions],
        }
        if self.info.missing_masks:
            columns["has_mask"] = self.mask_present(split)
        if self.info.multiclass_masks or self.info.multilabel_masks:
            for index, name in enumerate(store.mask_classes):
                columns[f"fraction_{name}"] = store.mask_fractions[positions, index]
        targets = self.targets(split)
        for head in self.info.target_heads:
            if head.continuous:
                columns.update(zip(head.columns, targets[head.name].T))
            else:
                names = np.array(list(head.class_names) + [""], dtype=object)
                columns[head.columns[0]] = names[targets[head.name]]  # MISSING_CLASS (-1) picks the empty name
        return pd.DataFrame(columns)

    def _examples(self, split: str):
        """``(dataset of (image, mask, label), shuffle buffer)`` of ``split``, from memory or a filled cache file."""
        import tensorflow as tf  # imported here: reading and inspecting a dataset do not need it

        positions = self._split_positions(split)
        labels = self._store.labels[positions].astype(np.int32)
        targets = {name: values.astype(np.float32 if values.ndim > 1 else np.int32)
                   for name, values in self.targets(split).items()}
        if self._store.in_memory:
            arrays = (self._store.images[positions], self._store.masks[positions], labels, targets)
            return tf.data.Dataset.from_tensor_slices(arrays), len(positions)
        if self._cache_dir is None:
            self._cache_dir = tempfile.mkdtemp(prefix="mtunet-cache-", dir=self._cache_parent)
            atexit.register(shutil.rmtree, self._cache_dir, ignore_errors=True)
        labels = tf.data.Dataset.from_tensor_slices((labels, targets))
        examples = tf.data.Dataset.zip(self._store.stream(positions), labels).map(
            lambda pair, label_and_targets: (*pair, *label_and_targets))
        examples = examples.cache(str(Path(self._cache_dir) / split))
        if split not in self._cached_splits:  # decode once now, so that every pipeline of the split reads the file
            examples.reduce(np.int64(0), lambda count, example: count + 1)
            self._cached_splits.add(split)
            logger.info("cached %d decoded %s examples in %s", len(positions), split, self._cache_dir)
        held = self._memory_limit // example_bytes(self._store.image_size, self._store.channels,
                                                   self._store.mask_channels)
        return examples, min(len(positions), max(held, MIN_SHUFFLE_BUFFER))

    def pipeline(self, split: str, *, batch_size: int, training: bool, augment: bool = True, seed: int = 0,
                 flip: str = "horizontal", shear: bool = True, drop_remainder: bool = False):
        """A ``tf.data.Dataset`` of ``(images, {"label": one_hot, "mask": masks, head: targets ...})`` batches of
        ``split``.

        Images are float32 ``(B, S, S, C)`` raw 0-255, labels float32 ``(B, num_classes)``, masks float32
        ``(B, S, S, 1)``: of 0/1 for binary masks, of the class values 0..K for ``info.mask_classes`` of K >= 2
        names, all -1 for an image without a mask; ``(B, S, S, K)`` of 0/1 per lesion type for multi-label masks,
        all -1 in the channel of a lesion type whose mask is missing. Each of ``info.target_heads`` adds float32
        one-hot labels ``(B, classes)`` (all zeros where missing) or values ``(B, columns)`` (NaN where missing) under
        its name.
        ``training=True`` shuffles from ``seed`` (anew each epoch) and augments if ``augment``; ``training=False``
        keeps the order of ``ids(split)`` and never augments. Not repeated. ``flip`` chooses the augmentation's flips
        (``mtunet.data.augment.FLIP_MODES``), ``shear`` whether it shears.

        In memory, a training split is shuffled as a whole. Streamed (``info.storage == "stream"``), the first
        pipeline of a split decodes it into a cache file (in a temporary folder removed when Python exits), which
        every pipeline of the split then reads; training shuffles it in a buffer of as many examples as the memory
        limit holds (at least ``MIN_SHUFFLE_BUFFER``).
        """
        from mtunet.data.pipeline import build_pipeline  # imports TensorFlow: reading and inspecting do not need it

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer; received {batch_size!r}")
        examples, shuffle_buffer = self._examples(split)
        target_classes = {head.name: None if head.continuous else len(head.class_names)
                          for head in self.info.target_heads}
        return build_pipeline(examples, shuffle_buffer=shuffle_buffer, num_classes=self.info.num_classes,
                              target_classes=target_classes,
                              batch_size=int(batch_size), training=training, augment=augment, seed=seed,
                              flip=flip, shear=shear, drop_remainder=drop_remainder)

    def class_weights(self) -> np.ndarray:
        """``(num_classes,)`` weights inversely proportional to class frequency in the train split's labels
        ("balanced")."""
        labels = self.labels("train")
        labels = labels[labels != MISSING_CLASS]
        absent = [name for index, name in enumerate(self.info.class_names) if not np.any(labels == index)]
        if absent:
            raise DataError(f"the train split of {self.info.name} has no example of class(es) {', '.join(absent)}; "
                            "expected every class in train to weight classes")
        return compute_class_weight("balanced", classes=np.arange(self.info.num_classes), y=labels)


def load_dataset(name: str, *, data_dir=None, image_size: int = 224, seed: int = 0, splits_path=None,
                 validation_fraction: float = 0.15, test_fraction: float = 0.15, fold: int | None = None,
                 num_folds: int | None = None, skip_bad_files: bool = False, memory_limit: int | None = None,
                 cache_dir=None, allow_missing=(), crop_fov: bool = False) -> LoadedDataset:
    """Reads a dataset, decodes it at ``image_size`` and splits it by patient, stratified by class (a dataset published
    with its own split, e.g. ``isic2017``, keeps that one unless ``fold`` asks for cross-validation).

    Every example is decoded here, so bad files stop loading (or are skipped) before any training. The decoded
    examples are kept in memory if they take at most ``memory_limit`` bytes (``S * S * 4`` bytes each for a 3-channel
    image and its mask; ``S * S * 2`` for a TFDS dataset declared grayscale), else streamed: decoded again by a
    parallel ``tf.data`` map and cached in a file per split, so that memory use does not grow with the number of
    images.

    Args:
        name: a name from ``mtunet.data.DATASETS``: ``"synthetic"``, ``"folder"``, or a downloaded dataset
            (``"isic2018"``, ``"lgg"``, ``"panda"``, ``"siim_acr"``), optionally with a builder config as
            ``"name/config"`` (e.g. ``"isic2018/task1_512"``).
        data_dir: the folder of a ``"folder"`` dataset; for a downloaded dataset, the download, prepared on first
            use into the TFDS data directory (``$TFDS_DATA_DIR``, default ``~/tensorflow_datasets``); for
            ``"synthetic"``, the TFDS data directory (None: TFDS's default).
        image_size: side of the square images served (aspect ratio kept by zero padding).
        seed: seed of the split.
        splits_path: a splits JSON file: read if it exists (and checked against the dataset's ids), else the
            splits made here are written to it.
        validation_fraction: share of the dataset for validation (default 0.15; unused with a published split).
        test_fraction: share of the dataset for test in a hold-out split (default 0.15; unused with ``fold``).
        fold, num_folds: K-fold cross-validation, fold ``fold`` (0-based) of ``num_folds`` being the test split.
        skip_bad_files: leave bad files out (listed in ``info.skipped``) instead of raising ``DataError``.
        allow_missing: targets some images may lack, of ``mtunet.options.MISSING_TARGETS`` (``("mask",)``: images
            without a mask file are kept and add nothing to the mask's loss and metrics); datasets whose entry has
            ``partial_labels``.
        crop_fov: cut each image and its mask to the image's field of view before resizing (fundus photographs:
            ``mtunet.data.images.field_of_view_box``); a model trained so is given its images so too
            (``ModelSpec.preprocessing``).
        memory_limit: bytes of decoded examples to hold in memory (None: a quarter of the machine's memory; 0
            streams every dataset).
        cache_dir: where streamed datasets make their temporary cache folder (None: the system's temporary folder).

    Examples::

        ds = load_dataset("folder", data_dir="data/busbra", image_size=224, splits_path="runs/splits.json")
        model.fit(ds.pipeline("train", batch_size=16, training=True),
                  validation_data=ds.pipeline("validation", batch_size=16, training=False), shuffle=False)
    """
    spec = get_dataset(name)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer; received {image_size!r}")
    check_split_options(validation_fraction, test_fraction, fold, num_folds)
    memory_limit = check_memory_limit(memory_limit)
    if spec.needs_data_dir and data_dir is None:
        raise ConfigError(f"dataset {name!r} needs data_dir (--data-dir): {spec.description}")
    partial = {}
    if allow_missing:
        if not spec.partial_labels:
            choices = ", ".join(entry.name for entry in DATASETS.values() if entry.partial_labels)
            raise ConfigError(f"dataset {name!r} cannot keep images without some targets (allow_missing); expected "
                              f"one of: {choices}")
        partial["allow_missing"] = check_allow_missing(allow_missing)
    store = spec.read(data_dir, image_size=int(image_size), skip_bad_files=skip_bad_files, memory_limit=memory_limit,
                      crop_fov=bool(crop_fov), **partial)
    if splits_path is not None and Path(splits_path).exists():
        splits = Splits.load(splits_path)
        splits.check(store.ids.tolist(), str(splits_path))
        logger.info("splits read from %s", splits_path)
    else:
        if store.published_splits is not None and fold is None:
            splits = published_splits(store.published_splits, dataset=name, seed=seed)
            logger.info("%s: the split it was published with (%s)", name, ", ".join(
                f"{split} {len(ids)}" for split, ids in splits.items()))
        else:
            splits = make_splits(store.ids, store.labels, store.groups, grouped=store.grouped, dataset=name,
                                 seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction,
                                 fold=fold, num_folds=num_folds)
        if splits_path is not None:
            splits.save(splits_path)
    return LoadedDataset(name, store, splits, memory_limit=memory_limit, cache_dir=cache_dir)
