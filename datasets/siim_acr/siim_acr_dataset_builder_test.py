"""Tests of the siim_acr builder: TFDS's builder checks on dummy_data/, the run-length decoding against an
independent encoder and a hand-made case, every example against the fake download's generator, patient-grouped
splits and the missing-file message."""

import numpy as np
import pytest
import siim_acr_fake_data
from siim_acr_dataset_builder import decode_rle

from mtunet.data import builder_testing, load_dataset
from mtunet.data.builders import builder_class, prepare_builder
from mtunet.errors import DataError

BUILDER = builder_class("siim_acr")


class DicomTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["dicom_512"]
    SPLITS = {"train": 9}  # 12 DICOMs; a corrupt one, a malformed encoding and one without row left out


class PngTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["png_512"]
    SPLITS = {"train": 11}  # 12 PNGs, one without mask


def test_decoding_a_hand_made_encoding_fills_columns_first():
    # [[1, 0, 0],    column-major pixels 1 1 | 0 1 | 0 0: a run of 2 from pixel 0, then one pixel
    #  [1, 1, 0]]    after a gap of 1 (pixel 3)
    np.testing.assert_array_equal(decode_rle("0 2 1 1", 2, 3), [[1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(decode_rle(" -1", 2, 3), np.zeros((2, 3)))


@pytest.mark.parametrize("shape", [(7, 5), (48, 64), (1, 9)])
def test_decoding_inverts_the_independent_encoder(shape):
    rng = np.random.default_rng(sum(shape))
    for fill in (0.0, 0.1, 0.5, 1.0):
        mask = rng.random(shape) < fill
        mask[-1, -1] = fill > 0.4  # a run reaching the last pixel, or not
        np.testing.assert_array_equal(decode_rle(siim_acr_fake_data.encode_rle(mask), *shape), mask)


@pytest.mark.parametrize("encoded", ["5 3 2", "3 -2", "40 30", "a b"])
def test_malformed_encodings_raise(encoded):
    with pytest.raises(ValueError):
        decode_rle(encoded, 6, 10)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(download folder, {source: FakeDownload}, TFDS data directory)``."""
    root = tmp_path_factory.mktemp("siim_acr")
    fakes = siim_acr_fake_data.write_fake_download(root / "download")
    builder_testing.assert_same_files(root / "download", BUILDER.code_path.parent / "dummy_data")
    return root / "download", fakes, root / "tfds"


@pytest.mark.parametrize("config", ["dicom_512", "png_512"])
def test_examples_are_what_the_generator_wrote(fake, config):
    download, fakes, tfds_dir = fake
    prepared, examples = builder_testing.prepare_fake(BUILDER, download, tfds_dir, config)
    builder_testing.assert_matches_fake(prepared, examples, fakes[config.split("_")[0]], image_tolerance=0)
    two_rows = examples["1.2.276.0.7230010.3.1.4.8323329.5601.1517875188.959094"]["mask"][..., 0]
    assert two_rows[:, :32].any() and two_rows[:, 32:].any()  # both rows of the image merged


def test_splits_keep_each_patient_together(fake):
    download, _, tfds_dir = fake
    with builder_testing.tfds_default_dir(tfds_dir):
        dataset = load_dataset("siim_acr", data_dir=download, image_size=32, validation_fraction=1 / 3,
                               test_fraction=1 / 3)
    groups = [set(dataset.table(split)["group"]) for split in ("train", "validation", "test")]
    assert dataset.splits.grouping == "patient" and dataset.info.num_groups == 8  # images 0 and 1: one patient
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_missing_table_names_the_path_the_download_and_its_page(tmp_path):
    (tmp_path / "dicom-images-train").mkdir()
    with pytest.raises(DataError) as error:
        prepare_builder(BUILDER, tmp_path / "tfds", manual_dir=tmp_path)
    assert str(error.value) == (
        f"{tmp_path}/train-rle.csv not found: expected train-rle.csv from the SIIM-ACR challenge's training data "
        "(dicom-images-train.zip and train-rle.csv) (https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation)")
