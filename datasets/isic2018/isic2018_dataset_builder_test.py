"""Tests of the isic2018 builder: TFDS's builder checks on dummy_data/, every example against the fake download's
generator, lesion-grouped splits and the missing-file message."""

import isic2018_fake_data
import numpy as np
import pytest

from mtunet.data import builder_testing, load_dataset
from mtunet.data.builders import builder_class, prepare_builder
from mtunet.errors import DataError

BUILDER = builder_class("isic2018")


class Task3Test(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["task3_256"]
    SPLITS = {"train": 38}  # 28 lesions, every third twice; the unreadable, unmasked and unlabelled images left out


class Task1Test(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["task1_256"]
    SPLITS = {"train": 6}  # no diagnosis, squamous cell carcinoma and no mask left out


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(download folder, {source: FakeDownload}, TFDS data directory)``, both configs prepared there."""
    root = tmp_path_factory.mktemp("isic2018")
    fakes = isic2018_fake_data.write_fake_download(root / "download")
    builder_testing.assert_same_files(root / "download", BUILDER.code_path.parent / "dummy_data")
    return root / "download", fakes, root / "tfds"


@pytest.mark.parametrize("config", ["task3_256", "task1_256"])
def test_examples_are_what_the_generator_wrote(fake, config):
    download, fakes, tfds_dir = fake
    prepared, examples = builder_testing.prepare_fake(BUILDER, download, tfds_dir, config)
    builder_testing.assert_matches_fake(prepared, examples, fakes[config.split("_")[0]], image_tolerance=6)
    assert prepared.info.features["label"].names == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    if config == "task3_256":
        assert examples["ISIC_0024313"]["image"].shape == (192, 256, 3)  # the 320x240 original, shrunk


def test_splits_keep_each_lesion_together(fake):
    download, _, tfds_dir = fake
    with builder_testing.tfds_default_dir(tfds_dir):
        dataset = load_dataset("isic2018/task3_256", data_dir=download, image_size=32, validation_fraction=0.25,
                               test_fraction=0.25)
    groups = [set(dataset.table(split)["group"]) for split in ("train", "validation", "test")]
    assert dataset.splits.grouping == "patient" and dataset.info.num_groups == 28
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sorted(file for file, _ in dataset.info.skipped) == ["ISIC_0024344", "ISIC_0024345", "ISIC_0024346"]
    assert np.all(dataset.class_weights() > 0)


def test_missing_masks_name_the_path_the_zip_and_its_page(tmp_path, fake):
    download, _, _ = fake
    for name in ("ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth"):
        (tmp_path / name).symlink_to(download / name)
    with pytest.raises(DataError) as error:
        prepare_builder(BUILDER, tmp_path / "tfds", config="task3_512", manual_dir=tmp_path)
    assert str(error.value) == (
        f"{tmp_path}/HAM10000_segmentations_lesion_tschandl not found: expected "
        "HAM10000_segmentations_lesion_tschandl from HAM10000_segmentations_lesion_tschandl.zip "
        "(https://doi.org/10.7910/DVN/DBW86T)")
