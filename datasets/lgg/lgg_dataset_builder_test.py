"""Tests of the lgg builder: TFDS's builder checks on dummy_data/, every example against the fake download's
generator, patient-grouped splits, numeric slice order and the missing-file message."""

import lgg_fake_data
import pytest

from mtunet.data import builder_testing, load_dataset
from mtunet.data.builders import builder_class, prepare_builder
from mtunet.errors import DataError

BUILDER = builder_class("lgg")


class TumorTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["tumor"]
    SPLITS = {"train": 28}  # 10 cases x 3 slices; an unreadable slice and one without mask left out


class HistologyTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["histology"]
    SPLITS = {"train": 13}  # tumour slices of the 9 patients with a histological type, less the unreadable one


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(download folder, {config: FakeDownload}, TFDS data directory)``."""
    root = tmp_path_factory.mktemp("lgg")
    fakes = lgg_fake_data.write_fake_download(root / "download")
    builder_testing.assert_same_files(root / "download", BUILDER.code_path.parent / "dummy_data")
    return root / "download", fakes, root / "tfds"


@pytest.mark.parametrize("config", ["tumor", "histology"])
def test_examples_are_what_the_generator_wrote(fake, config):
    download, fakes, tfds_dir = fake
    prepared, examples = builder_testing.prepare_fake(BUILDER, download, tfds_dir, config)
    builder_testing.assert_matches_fake(prepared, examples, fakes[config], image_tolerance=0)
    if config == "histology":
        assert prepared.info.features["label"].names == ["astrocytoma", "oligoastrocytoma", "oligodendroglioma"]
        assert dict(prepared.info.metadata.items())["outside_config"] == 12  # tumour-free slices
    else:
        ids = list(examples)  # in stored order: slices sort by number, 2 before 10
        assert ids[:3] == ["TCGA_CS_4942_19960910_1", "TCGA_CS_4942_19960910_2", "TCGA_CS_4942_19960910_10"]


@pytest.mark.parametrize("config", ["tumor", "histology"])
def test_splits_keep_each_patient_together(fake, config):
    download, _, tfds_dir = fake
    with builder_testing.tfds_default_dir(tfds_dir):
        dataset = load_dataset(f"lgg/{config}", data_dir=download, image_size=32, validation_fraction=1 / 3,
                               test_fraction=1 / 3)
    groups = [set(dataset.table(split)["group"]) for split in ("train", "validation", "test")]
    assert dataset.splits.grouping == "patient"
    assert dataset.info.num_groups == (10 if config == "tumor" else 9)
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_missing_clinical_table_names_the_path_the_download_and_its_page(tmp_path, fake):
    download, _, _ = fake
    (tmp_path / "kaggle_3m").mkdir()
    for case in (download / "kaggle_3m").iterdir():
        if case.is_dir():
            (tmp_path / "kaggle_3m" / case.name).symlink_to(case)
    prepare_builder(BUILDER, tmp_path / "tfds", config="tumor", manual_dir=tmp_path)  # needs no data.csv
    with pytest.raises(DataError) as error:
        prepare_builder(BUILDER, tmp_path / "tfds", config="histology", manual_dir=tmp_path)
    assert str(error.value) == (
        f"{tmp_path}/kaggle_3m/data.csv not found: expected kaggle_3m/data.csv from the Kaggle dataset "
        "mateuszbuda/lgg-mri-segmentation (archive.zip) (https://www.kaggle.com/datasets/mateuszbuda/"
        "lgg-mri-segmentation)")
