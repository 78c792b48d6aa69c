"""Test helpers for the builders in ``datasets/<name>/`` (as ``tfds.testing`` is for TFDS's): drawing for the seeded
fake-download generators, and checking a prepared fake download against what its generator wrote."""

import contextlib
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds

from mtunet.data.builders import left_out, prepare_builder


class BuilderTestCase(tfds.testing.DatasetBuilderTestCase):
    """TFDS's builder test (builds each config of ``BUILDER_CONFIG_NAMES_TO_TEST`` from ``dummy_data/``, checks split
    sizes, feature shapes and dtypes, reloading); subclasses declare ``DATASET_CLASS``, the configs and ``SPLITS``."""

    def test_session(self, *args, **kwargs):
        return super().test_session(*args, **kwargs)

    # tf.test.TestCase's session helper (TFDS's graph-mode runs use it) is no test: pytest would collect and skip it.
    test_session.__test__ = False


@dataclasses.dataclass
class FakeExample:
    """What a fake download holds for one example: ``image`` and ``mask`` (bool) as written before any lossy
    encoding, at their downloaded size, the class name ``label`` and the ``patient`` (group) the builder must give."""

    label: str
    patient: str
    image: np.ndarray
    mask: np.ndarray


@dataclasses.dataclass
class FakeDownload:
    """A generator's record of a fake download: the usable ``examples`` by id, and ``left_out``: ``{id: words the
    builder's reason must contain}``."""

    examples: dict[str, FakeExample] = dataclasses.field(default_factory=dict)
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)


def fake_lesion(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool: one filled ellipse somewhere in the middle of the image."""
    mask = np.zeros((height, width), np.uint8)
    centre = (int(rng.integers(width // 3, 2 * width // 3 + 1)), int(rng.integers(height // 3, 2 * height // 3 + 1)))
    axes = (int(rng.integers(max(2, width // 8), max(3, width // 4))),
            int(rng.integers(max(2, height // 8), max(3, height // 4))))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def fake_tissue(rng: np.random.Generator, mask: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W, channels)`` ``uint8``: a smooth noisy background with channels of different brightness, darker where
    ``mask`` is set (so a swapped channel order or a misplaced mask shows)."""
    height, width = mask.shape
    gradient = np.linspace(0, 40, width)[None, :] + np.linspace(0, 30, height)[:, None]
    base = 120 + gradient + rng.normal(0, 6, (height, width)) - 70 * mask
    offsets = np.array([40, 0, -40][:channels] if channels == 3 else [0])
    return np.clip(base[..., None] + offsets, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def tfds_default_dir(path):
    """Makes ``path`` TFDS's default data directory (``$TFDS_DATA_DIR`` is read when TFDS is imported), so that
    ``load_dataset`` prepares there."""
    import pytest
    from tensorflow_datasets.core import constants

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
