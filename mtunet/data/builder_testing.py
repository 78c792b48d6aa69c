"""Test helpers for the builders in ``datasets/<name>/`` (as ``tfds.testing`` is for TFDS's): TFDS's builder test,
and checking a prepared fake download against what its generator wrote (``mtunet.data.fake_downloads``)."""

import contextlib
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from mtunet.data.builders import left_out, prepare_builder
from mtunet.data.fake_downloads import FakeDownload


class BuilderTestCase(tfds.testing.DatasetBuilderTestCase):
    """TFDS's builder test (builds each config of ``BUILDER_CONFIG_NAMES_TO_TEST`` from ``dummy_data/``, checks split
    sizes, feature shapes and dtypes, reloading); subclasses declare ``DATASET_CLASS``, the configs and ``SPLITS``."""

    def test_session(self, *args, **kwargs):
        return super().test_session(*args, **kwargs)

    # tf.test.TestCase's session helper (TFDS's graph-mode runs use it) is no test: pytest would collect and skip it.
    test_session.__test__ = False


@contextlib.contextmanager
def tfds_default_dir(path):
    """Makes ``path`` TFDS's default data directory (``$TFDS_DATA_DIR`` is read when TFDS is imported), so that
    ``load_dataset`` prepares there."""
    import pytest  # a test-only dependency: imported when a test calls this

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(constants, "DATA_DIR", str(path))
        yield


def prepare_fake(builder, manual_dir, data_dir, config: str):
    """``(prepared builder, {id: example as numpy})`` of ``builder`` prepared from ``manual_dir`` into ``data_dir``."""
    prepared = prepare_builder(builder, data_dir, config=config, manual_dir=manual_dir)
    examples = {example["id"].decode(): example
                for example in tfds.as_numpy(prepared.as_dataset(split="train", shuffle_files=False))}
    return prepared, examples


def assert_matches_fake(prepared, examples: dict, fake: FakeDownload, *, image_tolerance: float) -> None:
    """Asserts that the prepared examples are exactly the fake's usable ones with their labels, patients and masks
    (resized as stored, nearest neighbour), images within a mean absolute difference of ``image_tolerance`` (0-255),
    no longer side above the config's ``max_side``, and that every left-out example is recorded with its reason."""
    class_names = prepared.info.features["label"].names
    assert sorted(examples) == sorted(fake.examples)
    max_side = prepared.builder_config.max_side
    for example_id, truth in fake.examples.items():
        example = examples[example_id]
        assert (class_names[example["label"]], example["patient"].decode()) == (truth.label, truth.patient), \
            example_id
        height, width = example["mask"].shape[:2]
        assert example["image"].shape[:2] == (height, width), example_id
        if max_side is not None:
            assert max(height, width) <= max_side, example_id
        shrunk = (height, width) != truth.mask.shape
        mask = cv2.resize(truth.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) \
            if shrunk else truth.mask
        np.testing.assert_array_equal(example["mask"][..., 0], mask, err_msg=example_id)
        image = cv2.resize(truth.image, (width, height), interpolation=cv2.INTER_AREA) if shrunk else truth.image
        difference = np.abs(example["image"].astype(float) - image.reshape(example["image"].shape)).mean()
        assert difference <= image_tolerance, (example_id, difference)
    recorded = dict(left_out(prepared.info))
    assert sorted(recorded) == sorted(fake.left_out)
    for example_id, words in fake.left_out.items():
        assert words in recorded[example_id], (example_id, recorded[example_id])


def assert_same_files(generated: Path, committed: Path) -> None:
    """Asserts that ``committed`` (a builder's ``dummy_data/``) holds the same file names as a fresh run of its
    generator wrote to ``generated``: the committed fake download is the generator's current output."""

    def names(root):
        return sorted(str(path.relative_to(root)) for path in Path(root).rglob("*") if path.is_file())

    assert names(committed) == names(generated)
