"""Tests of the jsrt builder: TFDS's builder checks on dummy_data/, every example against the fake download's
generator (nodule discs and SCR lungs), the further targets as load_dataset serves them, and the missing-file
message."""

import jsrt_fake_data
import numpy as np
import pandas as pd
import pytest
from jsrt_dataset_builder import nodule_disc

from mtunet.data import builder_testing, load_dataset
from mtunet.data.builders import builder_class, prepare_builder
from mtunet.data.targets import MISSING_CLASS
from mtunet.errors import DataError

BUILDER = builder_class("jsrt")


class NoduleTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["nodule_512"]
    SPLITS = {"train": 15}  # 16 images and a row without one; an unknown state and a nodule without x left out


class LungsTest(builder_testing.BuilderTestCase):
    DATASET_CLASS = BUILDER
    BUILDER_CONFIG_NAMES_TO_TEST = ["lungs_512"]
    SPLITS = {"train": 14}  # as nodule_512, less one more image without SCR masks


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``(download folder, {config: FakeDownload}, TFDS data directory)``."""
    root = tmp_path_factory.mktemp("jsrt")
    fakes = jsrt_fake_data.write_fake_download(root / "download")
    builder_testing.assert_same_files(root / "download", BUILDER.code_path.parent / "dummy_data")
    return root / "download", fakes, root / "tfds"


def test_nodule_disc_is_the_recorded_size_at_the_recorded_place():
    disc = nodule_disc((2048, 2048), x=1000, y=600, size_mm=17.5)  # 100 px across at 0.175 mm
    rows, columns = np.nonzero(disc)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (550, 650, 950, 1050)
    assert disc.sum() == pytest.approx(np.pi * 50 ** 2, rel=0.01)
    small = nodule_disc((512, 512), x=1000, y=600, size_mm=17.5)  # the same nodule on the image shrunk 4x
    assert small[150, 250] and not small[150, 263]  # radius 12.5 px, rounded to 12
    assert small.sum() == pytest.approx(np.pi * 12 ** 2, rel=0.05)


@pytest.mark.parametrize("config", ["nodule_512", "lungs_512"])
def test_examples_are_what_the_generator_wrote(fake, config):
    download, fakes, tfds_dir = fake
    prepared, examples = builder_testing.prepare_fake(BUILDER, download, tfds_dir, config)
    builder_testing.assert_matches_fake(prepared, examples, fakes[config], image_tolerance=0)
    assert prepared.info.features["label"].names == ["non-nodule", "benign", "malignant"]


def test_further_targets_are_served_as_heads_with_missing_values(fake):
    download, _, tfds_dir = fake
    with builder_testing.tfds_default_dir(tfds_dir):
        data = load_dataset("jsrt/nodule_512", data_dir=download, image_size=32, validation_fraction=0.25,
                            test_fraction=0.25)
    heads = {head.name: head for head in data.info.target_heads}
    assert list(heads) == ["subtlety", "diagnosis", "size", "position"]
    assert heads["subtlety"].class_names == ("1", "2", "3", "4", "5") and heads["position"].columns == ("x", "y")
    assert heads["diagnosis"].class_names == ("adenocarcinoma", "granuloma", "hamartoma", "squamous cell carcinoma")
    metadata = pd.read_csv(download / "jsrt_metadata.csv", dtype=str).set_index("study_id")
    for split in ("train", "validation", "test"):
        targets = data.targets(split)
        for position, example in enumerate(data.ids(split)):
            row = metadata.loc[f"{example}.png"]
            if row["state"] == "non-nodule":
                assert targets["subtlety"][position] == MISSING_CLASS and np.isnan(targets["size"][position]).all()
                assert targets["diagnosis"][position] == MISSING_CLASS
            else:
                assert heads["subtlety"].class_names[targets["subtlety"][position]] == str(int(float(row["subtlety"])))
                np.testing.assert_array_equal(targets["position"][position], [float(row["x"]), float(row["y"])])
                assert targets["size"][position, 0] == float(row["size"])


def test_missing_metadata_names_the_path_the_download_and_its_page(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as error:
        prepare_builder(BUILDER, tmp_path / "tfds", config="nodule_512", manual_dir=tmp_path)
    assert str(error.value) == (
        f"{tmp_path}/jsrt_metadata.csv not found: expected jsrt_metadata.csv from the Kaggle copy of JSRT "
        "(raddar/nodules-in-chest-xrays-jsrt) (https://www.kaggle.com/datasets/raddar/nodules-in-chest-xrays-jsrt)")
