"""Reading a TFDS builder into an ``ExampleStore``.

An mtunet TFDS builder puts every example in one ``"train"`` split (mtunet makes its own patient-grouped splits) with
the features ``id`` (text), ``patient`` (text, may be empty), ``image`` (any size, 1 or 3 channels), ``mask`` (the
image's size, 1 channel) and ``label`` (``ClassLabel``). The dataset's order is the split's file order. Examples a
builder left out while preparing (``info.metadata["left_out"]``) are listed in the store's ``skipped``; a split the
dataset was published with (``info.metadata["splits"]``) is the store's ``published_splits``.

A builder declares its mask classes as the class attribute ``MASK_CLASSES`` (the names of mask values 1..K);
without it, or with ``BINARY_MASK_CLASSES``, masks are binary (see ``mtunet.data.images``). Its further targets are
the class attribute ``TARGET_COLUMNS`` (declared as a folder dataset's ``columns.json``, ``mtunet.data.targets``),
stored as the text features ``targets/<column>``.
"""

import functools

import numpy as np

from mtunet.data.builders import left_out, prepare_builder, recorded_splits
from mtunet.data.images import BINARY_MASK_CLASSES, MaskError, lesion_fraction, mask_fractions, prepare_pair
from mtunet.data.problems import Problems
from mtunet.data.store import ExampleStore, build_store, check_memory_limit, fits_in_memory
from mtunet.data.targets import declare_target_heads, parse_targets


def read_tfds(builder_class, data_dir=None, *, image_size: int, config: str | None = None, manual_dir=None,
              skip_bad_files: bool = False, memory_limit: int | None = None, crop_fov: bool = False) -> ExampleStore:
    """Prepares ``builder_class`` in the TFDS ``data_dir`` if needed and decodes every example at ``image_size``.

    Args:
        builder_class: a ``tfds.core.DatasetBuilder`` subclass with the features above.
        data_dir: TFDS data directory; None for TFDS's default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        config: the builder config (None: its default).
        manual_dir: the hand download a manual-download builder is prepared from.
        image_size: side of the square arrays.
        skip_bad_files: leave out examples whose mask is not the image's size or holds values beyond the builder's
            ``MASK_CLASSES`` instead of raising ``DataError``.
        memory_limit: bytes the decoded examples may take in memory (None: ``store.default_memory_limit()``); more
            are streamed from the TFDS files.
        crop_fov: cut each image and its mask to the image's field of view first
            (``mtunet.data.images.field_of_view_box``).
    """
    import tensorflow_datasets as tfds  # imported here: it takes seconds, and only a TFDS read needs it

    builder = prepare_builder(builder_class, data_dir, config=config, manual_dir=manual_dir)
    channels = builder.info.features["image"].shape[-1] or 3
    in_memory = fits_in_memory(builder.info.splits["train"].num_examples, image_size,
                               check_memory_limit(memory_limit), channels)
    mask_classes = tuple(getattr(builder_class, "MASK_CLASSES", BINARY_MASK_CLASSES))
    num_mask_classes = len(mask_classes)
    prepare = functools.partial(prepare_pair, image_size=image_size, num_mask_classes=num_mask_classes,
                                crop_fov=crop_fov)
    problems = Problems(builder.name, skip=skip_bad_files)
    target_columns = getattr(builder_class, "TARGET_COLUMNS", {})
    declarations = declare_target_heads(target_columns, list(target_columns), builder.name)
    rows, grouped = [], False
    for position, example in enumerate(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))):
        example_id, patient = example["id"].decode(), example["patient"].decode()
        if example["mask"].shape[:2] != example["image"].shape[:2]:
            problems.add(example_id, "are masks of another size than their image",
                         "a mask of its image's height and width")
            continue
        try:
            image, mask = prepare(example["image"], example["mask"])
        except MaskError as bad:
            problems.add(example_id, bad.problem, bad.expected)
            continue
        grouped = grouped or bool(patient)
        rows.append({"id": example_id, "label": int(example["label"]), "group": patient or example_id,
                     "channels": image.shape[2], "size": example["image"].shape[:2],
                     "lesion_fraction": lesion_fraction(example["mask"], num_mask_classes),
                     "mask_fractions": mask_fractions(example["mask"], num_mask_classes),
                     "image": image if in_memory else None, "mask": mask if in_memory else None,
                     "cells": {column: value.decode() for column, value in example.get("targets", {}).items()},
                     "position": position})
    target_heads, bad = parse_targets(declarations, rows, problems, location=str)
    rows = [row for row in rows if row["id"] not in bad]
    read_positions = [row["position"] for row in rows]
    skipped = left_out(builder.info) + problems.resolve()
    streamer = None
    if not in_memory:
        from mtunet.data.stream import tfds_streamer  # imports TensorFlow: only streaming needs it

        streamer = tfds_streamer(builder, np.array(read_positions), prepare, image_size)
    class_names = builder.info.features["label"].names
    return build_store(rows, class_names, grouped=grouped, skipped=skipped, source=builder.name,
                       image_size=image_size, streamer=streamer, mask_classes=mask_classes,
                       published_splits=recorded_splits(builder.info), target_heads=target_heads,
                       label_kind=getattr(builder_class, "LABEL_KIND", "categorical"))
