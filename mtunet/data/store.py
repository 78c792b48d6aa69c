"""``ExampleStore``: every usable example of a dataset, the common output of every source.

A source decodes every example once while reading (so that bad files are found before training). If the decoded
examples fit in the memory limit, it keeps them as arrays; otherwise it keeps only their facts and a ``stream``
function that decodes them again with ``tf.data`` when a pipeline asks for them.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from mtunet.data.images import BINARY_MASK_CLASSES, expand_channels
from mtunet.data.targets import TargetHead, target_arrays
from mtunet.errors import ConfigError, DataError

# Share of the machine's physical memory that decoded examples may take by default.
DEFAULT_MEMORY_SHARE = 0.25


def default_memory_limit() -> int:
    """Bytes of decoded examples kept in memory by default: a quarter of the machine's physical memory."""
    return int(DEFAULT_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory_limit(memory_limit) -> int:
    """``memory_limit`` as bytes (None: ``default_memory_limit()``); ``ConfigError`` unless it is a number >= 0."""
    if memory_limit is None:
        return default_memory_limit()
    if isinstance(memory_limit, bool) or not isinstance(memory_limit, (int, np.integer)) or memory_limit < 0:
        raise ConfigError(f"memory_limit must be a number of bytes >= 0 or None; received {memory_limit!r}")
    return int(memory_limit)


def example_bytes(image_size: int, channels: int, mask_channels: int = 1) -> int:
    """Bytes of one decoded example: a ``uint8`` image of ``channels`` channels and its mask of ``mask_channels``
    (1, or one per lesion type of a multi-label mask)."""
    return image_size * image_size * (channels + mask_channels)


def fits_in_memory(count: int, image_size: int, memory_limit: int, channels: int = 3, mask_channels: int = 1) -> bool:
    """Whether ``count`` decoded examples take at most ``memory_limit`` bytes (counting ``channels`` channels: 3 when
    a source cannot know yet whether its images are colour; ``mask_channels`` as ``example_bytes``)."""
    return count * example_bytes(image_size, channels, mask_channels) <= memory_limit


@dataclasses.dataclass(frozen=True)
class ExampleStore:
    """Every usable example of a dataset, in the dataset's order.

    Attributes:
        ids: ``(N,)`` example ids (file stems, or the ids a TFDS builder gives).
        labels: ``(N,)`` int class indices into ``class_names``; ``MISSING_CLASS`` (-1) for an example without a
            label.
        groups: ``(N,)`` patient of each example; examples of one group never end up in different splits.
        grouped: whether ``groups`` are real patient ids (False: each example is its own group).
        class_names: the class of each index.
        skipped: ``[(file, reason), ...]``: every file left out, and why.
        image_size: side ``S`` of the square served images.
        channels: channels ``C`` of the served images, 1 or 3 (3 if any image is colour).
        original_sizes: ``(N, 2)`` height and width of each image as stored.
        lesion_fractions: ``(N,)`` share of lesion pixels (of any non-zero mask value) in each mask as stored.
        mask_classes: names of the mask values 1..K (``BINARY_MASK_CLASSES``: a binary mask of 0/1), or of the
            lesion types of multi-label masks (``multilabel_masks``).
        mask_fractions: ``(N, K)`` share of the pixels of each mask as stored holding each mask value 1..K (of
            each lesion type's mask for multi-label masks, NaN where it is missing).
        images: ``(N, S, S, C)`` ``uint8``, or None when the examples are streamed.
        masks: ``(N, S, S, 1)`` ``uint8`` of 0/1 (binary) or of class values 0..K, or ``(N, S, S, K)`` of 0/1 per
            lesion type (multi-label; a missing lesion type's channel all ``MISSING_MASK_VALUE``), or None when the
            examples are streamed.
        stream: when streamed, ``stream(positions)``: a ``tf.data.Dataset`` of ``(image, mask)`` as above for the
            examples at ``positions`` (ascending), in that order; else None.
        published_splits: ``{"train": [id, ...], "validation": [...], "test": [...]}`` for a dataset published with
            its own split (a challenge's), else None.
        target_heads: the further targets' ``TargetHead`` s (``mtunet.data.targets``), learnt by heads of their own.
        targets: ``{head: (N,) int64 class indices, -1 if missing | (N, columns) float64 values, NaN if missing}``.
        label_kind: ``"categorical"`` or ``"ordinal"`` (the labels are grades, in the order of ``class_names``).
        mask_present: ``(N,)`` whether each example has a mask; one without has ``MISSING_MASK_VALUE`` in every pixel
            of its stored mask and NaN fractions (None: every example has one). A multi-label mask counts as one when
            some lesion type's channel is present.
        multilabel_masks: whether masks hold one binary channel per lesion type of ``mask_classes``.
    """

    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    grouped: bool
    class_names: list[str]
    skipped: list[tuple[str, str]]
    image_size: int
    channels: int
    original_sizes: np.ndarray
    lesion_fractions: np.ndarray
    mask_classes: tuple[str, ...]
    mask_fractions: np.ndarray
    images: np.ndarray | None
    masks: np.ndarray | None
    stream: Callable | None
    published_splits: dict[str, list[str]] | None = None
    target_heads: tuple[TargetHead, ...] = ()
    targets: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    mask_present: np.ndarray | None = None
    label_kind: str = "categorical"
    multilabel_masks: bool = False

    @property
    def mask_channels(self) -> int:
        """Channels of the stored masks: one per lesion type of multi-label masks, else 1."""
        return len(self.mask_classes) if self.multilabel_masks else 1

    def has_masks(self) -> np.ndarray:
        """``(N,)`` whether each example has a mask."""
        return np.ones(len(self.ids), bool) if self.mask_present is None else self.mask_present

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def num_groups(self) -> int:
        return len(set(self.groups.tolist()))


def build_store(rows: list[dict], class_names: list[str], *, grouped: bool, skipped, source: str, image_size: int,
                streamer: Callable | None = None, mask_classes=BINARY_MASK_CLASSES,
                published_splits: dict | None = None, target_heads=(), label_kind="categorical",
                multilabel_masks: bool = False) -> ExampleStore:
    """An ``ExampleStore`` from examples a source has decoded, in the order given.

    Args:
        rows: one dict per example with ``id``, ``label`` (int), ``group``, ``channels`` (1 or 3), ``size``
            (height, width as stored), ``lesion_fraction``, ``mask_fractions`` (one share per mask class), optionally
            ``mask_present`` (default True) and, unless streaming, ``image`` ``(S, S, channels)`` and ``mask``
            ``(S, S, 1)`` (``(S, S, K)`` for multi-label masks).
        class_names: names of the label indices; at least 2.
        grouped: whether ``group`` holds real patient ids.
        skipped: ``[(file, reason), ...]`` already left out.
        source: where the examples came from, for error messages.
        image_size: side of the served images.
        streamer: None to keep the rows' arrays in memory; else ``streamer(channels)`` gives the store's ``stream``.
        mask_classes: names of the mask values 1..K (default ``BINARY_MASK_CLASSES``: binary masks).
        published_splits: the dataset's own split, ``{split: [id, ...]}``; ids not among the rows are dropped.
        target_heads: further targets' ``TargetHead`` s; each row then has ``targets`` (``{head: value}``).
        label_kind: ``"categorical"`` or ``"ordinal"`` (``mtunet.data.targets.LABEL_KINDS``).
        multilabel_masks: whether masks are multi-label, one binary channel per lesion type of ``mask_classes``.
    """
    if not rows:
        raise DataError(f"{source} has no usable example ({len(skipped)} skipped)")
    if len(class_names) < 2:
        raise DataError(f"{source} has only the class(es) {class_names}; expected at least 2 classes")
    channels = max(row["channels"] for row in rows)
    in_memory = streamer is None
    read = {row["id"] for row in rows}
    return ExampleStore(
        ids=np.array([row["id"] for row in rows]),
        labels=np.array([row["label"] for row in rows], dtype=np.int64),
        groups=np.array([row["group"] for row in rows]),
        grouped=grouped,
        class_names=list(class_names),
        skipped=list(skipped),
        image_size=image_size,
        channels=channels,
        original_sizes=np.array([row["size"] for row in rows], dtype=np.int64),
        lesion_fractions=np.array([row["lesion_fraction"] for row in rows], dtype=np.float64),
        mask_classes=tuple(mask_classes),
        mask_fractions=np.array([row["mask_fractions"] for row in rows], dtype=np.float64).reshape(
            len(rows), len(mask_classes)),
        images=np.stack([expand_channels(row["image"], channels) for row in rows]) if in_memory else None,
        masks=np.stack([row["mask"] for row in rows]) if in_memory else None,
        stream=None if in_memory else streamer(channels),
        published_splits=None if published_splits is None else {
            split: [example for example in ids if example in read] for split, ids in published_splits.items()},
        target_heads=tuple(target_heads),
        targets=target_arrays(target_heads, rows),
        mask_present=np.array([row.get("mask_present", True) for row in rows], bool),
        label_kind=label_kind,
        multilabel_masks=bool(multilabel_masks),
    )
