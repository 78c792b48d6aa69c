import socket

import numpy as np
import pytest

from mtunet.data import synthetic


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_synthetic_examples_are_fixed_and_consistent():
    first = list(synthetic.synthetic_examples(num_patients=6))
    again = list(synthetic.synthetic_examples(num_patients=6))
    assert len(first) == 6 * synthetic.IMAGES_PER_PATIENT
    for one, other in zip(first, again):
        np.testing.assert_array_equal(one["image"], other["image"])
    for example in list(synthetic.synthetic_examples(num_patients=12)):
        assert example["image"].shape == example["mask"].shape == (128, 128, 1)
        lesion = example["mask"][..., 0] > 0
        assert lesion.any() == (example["label"] != "normal")
        if lesion.any():  # lesions are darker than the tissue around them
            assert example["image"][lesion].mean() < 0.7 * example["image"][~lesion].mean()


def test_tfds_load_prepares_the_builder_offline(tmp_path, offline):
    import tensorflow_datasets as tfds

    import mtunet.data.synthetic_tfds  # noqa: F401  (registers the builder)

    dataset, info = tfds.load(
        "mtunet_synthetic", split="train", data_dir=tmp_path, with_info=True,
        download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(try_download_gcs=False)},
    )
    assert info.splits["train"].num_examples == synthetic.NUM_PATIENTS * synthetic.IMAGES_PER_PATIENT
    assert info.features["label"].names == list(synthetic.CLASS_NAMES)
    example = next(iter(tfds.as_numpy(dataset)))
    assert example["image"].shape == example["mask"].shape == (128, 128, 1)
    assert set(np.unique(example["mask"])) <= {0, 255}


def test_load_dataset_synthetic(synthetic):
    info = synthetic.info
    assert info.class_names == ["normal", "benign", "malignant"]
    assert (info.num_classes, info.channels, info.image_size) == (3, 1, 32)
    assert sum(info.split_sizes.values()) == 192 and info.num_groups == 96
    assert synthetic.splits.grouping == "patient"
    assert info.skipped == []
