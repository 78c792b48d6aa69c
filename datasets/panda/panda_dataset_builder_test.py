"""Tests of the panda builder: TFDS's builder checks on dummy_data/, the providers' mask values, every example
against the fake download's generator, slide-wise splits and the missing-file message."""

import numpy as np
import panda_fake_data
import pytest
from panda_dataset_builder import cancer_mask

from mtunet.data import builder_testing, load_dataset
from mtunet.data.builders import builder_class, prepare_builder
from mtunet.errors import DataError

BUILDER = builder_class("panda")


class PandaTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["lowres_512"]
    SPLITS = {"train": 18}  # 3 slides per grade; the unmasked, corrupt and single-level slides left out


@pytest.mark.parametrize("provider, values, cancer", [
    ("radboud", [0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 1, 1]),  # background, stroma, benign epithelium, Gleason 3-5
    ("karolinska", [0, 1, 2], [0, 0, 1]),  # background, benign tissue, cancerous tissue
])
def test_cancer_is_gleason_3_to_5_at_radboud_and_2_at_karolinska(provider, values, cancer):
    np.testing.assert_array_equal(cancer_mask(np.array([values], np.uint8), provider), [cancer])


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(download folder, FakeDownload, TFDS data directory)``."""
    root = tmp_path_factory.mktemp("panda")
    fake_download = panda_fake_data.write_fake_download(root / "download")
    builder_testing.assert_same_files(root / "download", BUILDER.code_path.parent / "dummy_data")
    return root / "download", fake_download, root / "tfds"


def test_examples_are_what_the_generator_wrote(fake):
    download, fake_download, tfds_dir = fake
    prepared, examples = builder_testing.prepare_fake(BUILDER, download, tfds_dir, "lowres_512")
    builder_testing.assert_matches_fake(prepared, examples, fake_download, image_tolerance=6)
    assert {example["image"].shape for example in examples.values()} == {(12, 16, 3)}  # the lowest level
    assert {int(example["mask"].max()) for example in examples.values()} == {0, 1}  # grade 0 slides have no cancer


def test_splits_put_each_slide_in_one_split_and_grades_are_ordinal(fake):
    download, _, tfds_dir = fake
    with builder_testing.tfds_default_dir(tfds_dir):
        dataset = load_dataset("panda", data_dir=download, image_size=32, validation_fraction=1 / 3,
                               test_fraction=1 / 3)
    ids = [set(dataset.ids(split)) for split in ("train", "validation", "test")]
    assert dataset.splits.grouping == "example" and sum(map(len, ids)) == len(set.union(*ids)) == 18
    assert dataset.info.split_sizes == {"train": 6, "validation": 6, "test": 6}
    assert dataset.info.label_kind == "ordinal"  # ISUP grades: an ordinal head with --ordinal-loss coral


def test_missing_table_names_the_path_the_download_and_its_page(tmp_path):
    (tmp_path / "train_images").mkdir()
    (tmp_path / "train_label_masks").mkdir()
    with pytest.raises(DataError) as error:
        prepare_builder(BUILDER, tmp_path / "tfds", manual_dir=tmp_path)
    assert str(error.value) == (
        f"{tmp_path}/train.csv not found: expected train.csv from the Kaggle competition "
        "prostate-cancer-grade-assessment (kaggle competitions download) "
        "(https://www.kaggle.com/c/prostate-cancer-grade-assessment/data)")
