"""``ExampleStore``: a whole dataset decoded to fixed-size arrays in memory, the common output of every source."""

import dataclasses

import numpy as np

from mtunet.data.images import stack_images
from mtunet.errors import DataError


@dataclasses.dataclass(frozen=True)
class ExampleStore:
    """Every usable example of a dataset, in the dataset's order.

    Attributes:
        ids: ``(N,)`` example ids (file stems, or the ids a TFDS builder gives).
        labels: ``(N,)`` int class indices into ``class_names``.
        groups: ``(N,)`` patient of each example; examples of one group never end up in different splits.
        grouped: whether ``groups`` are real patient ids (False: each example is its own group).
        class_names: the class of each index.
        images: ``(N, S, S, C)`` ``uint8``, C 1 or 3.
        masks: ``(N, S, S, 1)`` ``uint8`` of 0/1.
        skipped: ``[(file, reason), ...]`` left out because they were bad.
    """

    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    grouped: bool
    class_names: list[str]
    images: np.ndarray
    masks: np.ndarray
    skipped: list[tuple[str, str]]

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    @property
    def num_groups(self) -> int:
        return len(set(self.groups.tolist()))


def build_store(rows: list[dict], class_names: list[str], *, grouped: bool, skipped, source: str) -> ExampleStore:
    """An ``ExampleStore`` from prepared examples, in the order given.

    Args:
        rows: one dict per example with ``id``, ``label`` (int), ``group``, ``image`` ``(S, S, 1 or 3)`` and
            ``mask`` ``(S, S, 1)``; images are made 3-channel if any one of them is colour.
        class_names: names of the label indices; at least 2.
        grouped: whether ``group`` holds real patient ids.
        skipped: ``[(file, reason), ...]`` already left out.
        source: where the examples came from, for error messages.
    """
    if not rows:
        raise DataError(f"{source} has no usable example ({len(skipped)} skipped)")
    if len(class_names) < 2:
        raise DataError(f"{source} has only the class(es) {class_names}; expected at least 2 classes")
    channels = max(row["image"].shape[2] for row in rows)
    return ExampleStore(
        ids=np.array([row["id"] for row in rows]),
        labels=np.array([row["label"] for row in rows], dtype=np.int64),
        groups=np.array([row["group"] for row in rows]),
        grouped=grouped,
        class_names=list(class_names),
        images=stack_images([row["image"] for row in rows], channels),
        masks=np.stack([row["mask"] for row in rows]),
        skipped=list(skipped),
    )
