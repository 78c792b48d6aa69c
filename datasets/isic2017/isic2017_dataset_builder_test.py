"""Tests of the isic2017 builder: TFDS's builder checks on dummy_data/, every example against the fake download's
generator, the challenge's split kept (and pooled for K-fold) and the missing-file message."""

import isic2017_fake_data
import pytest

from mtunet.data import builder_testing, load_dataset
from mtunet.data.builders import builder_class, prepare_builder
from mtunet.errors import DataError

BUILDER = builder_class("isic2017")


class Isic2017Test(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["256"]
    SPLITS = {"train": 15}  # 3 x 3 training, 3 validation, 3 test images; the 4 unusable training images left out


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(download folder, FakeDownload, {split: ids}, TFDS data directory)``, the 256 px config prepared there."""
    root = tmp_path_factory.mktemp("isic2017")
    fake_download, splits = isic2017_fake_data.write_fake_download(root / "download")
    builder_testing.assert_same_files(root / "download", BUILDER.code_path.parent / "dummy_data")
    return root / "download", fake_download, splits, root / "tfds"


def test_examples_are_what_the_generator_wrote(fake):
    download, fake_download, _, tfds_dir = fake
    prepared, examples = builder_testing.prepare_fake(BUILDER, download, tfds_dir, "256")
    builder_testing.assert_matches_fake(prepared, examples, fake_download, image_tolerance=6)
    assert prepared.info.features["label"].names == ["melanoma", "seborrheic_keratosis", "nevus"]
    assert examples["ISIC_0000016"]["image"].shape == (192, 256, 3)  # the 320x240 original, shrunk


def test_hold_out_runs_keep_the_challenges_split_and_k_fold_pools_it(fake, tmp_path):
    download, _, splits, tfds_dir = fake
    with builder_testing.tfds_default_dir(tfds_dir):
        dataset = load_dataset("isic2017/256", data_dir=download, image_size=32, splits_path=tmp_path / "s.json")
        assert {split: dataset.ids(split) for split in splits} == splits
        assert dataset.splits.grouping == "published" and dataset.splits.test_fraction == pytest.approx(3 / 15)
        reread = load_dataset("isic2017/256", data_dir=download, image_size=32, splits_path=tmp_path / "s.json")
        assert dict(reread.splits) == dict(dataset.splits)
        folds = [load_dataset("isic2017/256", data_dir=download, image_size=32, fold=fold, num_folds=3,
                              validation_fraction=0.2) for fold in range(3)]
    assert all(fold.splits.grouping == "example" for fold in folds)
    tests = [set(fold.ids("test")) for fold in folds]
    assert set().union(*tests) == {example for ids in splits.values() for example in ids}
    assert sum(map(len, tests)) == 15


def test_a_missing_validation_set_names_the_path_the_zip_and_its_page(tmp_path, fake):
    download = fake[0]
    for path in download.iterdir():
        if "Validation" not in path.name:
            (tmp_path / path.name).symlink_to(path)
    with pytest.raises(DataError) as error:
        prepare_builder(BUILDER, tmp_path / "tfds", config="512", manual_dir=tmp_path)
    assert str(error.value) == (
        f"{tmp_path}/ISIC-2017_Validation_Data not found: expected ISIC-2017_Validation_Data from "
        "ISIC-2017_Validation_Data.zip (https://challenge.isic-archive.com/data/#2017)")
