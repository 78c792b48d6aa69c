"""Reading a TFDS builder into an ``ExampleStore``.

An mtunet TFDS builder puts every example in one ``"train"`` split (mtunet makes its own patient-grouped splits) with
the features ``id`` (text), ``patient`` (text, may be empty), ``image`` (any size, 1 or 3 channels), ``mask`` (the
image's size, 1 channel) and ``label`` (``ClassLabel``).
"""

from mtunet.data.images import prepare_pair
from mtunet.data.problems import Problems
from mtunet.data.store import ExampleStore, build_store


def read_tfds(builder_class, data_dir=None, *, image_size: int, skip_bad_files: bool = False) -> ExampleStore:
    """Prepares ``builder_class`` in the TFDS ``data_dir`` if needed and decodes it at ``image_size``, sorted by id.

    Args:
        builder_class: a ``tfds.core.DatasetBuilder`` subclass with the features above.
        data_dir: TFDS data directory; None for TFDS's default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        image_size: side of the square arrays.
        skip_bad_files: leave out examples whose mask is not the image's size instead of raising ``DataError``.
    """
    import tensorflow_datasets as tfds

    builder = builder_class(data_dir=None if data_dir is None else str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    problems = Problems(builder.name, skip=skip_bad_files)
    rows, grouped = [], False
    for example in tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)):
        example_id, patient = example["id"].decode(), example["patient"].decode()
        if example["mask"].shape[:2] != example["image"].shape[:2]:
            problems.add(example_id, "are masks of another size than their image",
                         "a mask of its image's height and width")
            continue
        image, mask = prepare_pair(example["image"], example["mask"], image_size)
        grouped = grouped or bool(patient)
        rows.append({"id": example_id, "label": int(example["label"]), "group": patient or example_id,
                     "image": image, "mask": mask})
    skipped = problems.resolve()
    rows.sort(key=lambda row: row["id"])
    class_names = builder.info.features["label"].names
    return build_store(rows, class_names, grouped=grouped, skipped=skipped, source=builder.name)
