import json

import pytest
from click.testing import CliRunner

from cli import main
from mtunet.data import DATASETS, inspect_dataset, load_dataset
from mtunet.errors import ConfigError


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset 'isic'; expected one of: synthetic, folder"):
        load_dataset("isic")
    assert {"synthetic", "folder"} <= set(DATASETS)


def test_folder_needs_data_dir_and_image_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"dataset 'folder' needs data_dir \(--data-dir\)"):
        load_dataset("folder")
    with pytest.raises(ConfigError, match=r"image_size must be a positive integer; received 0"):
        load_dataset("synthetic", image_size=0)


def test_info_is_json_serialisable_and_lists_skipped_files(folder_dataset):
    root = folder_dataset(num_patients=20)
    (root / "images" / "case001_0.png").write_bytes(b"broken")
    dataset = load_dataset("folder", data_dir=root, image_size=16, skip_bad_files=True)
    record = json.loads(json.dumps(dataset.info.to_dict()))
    assert record["skipped"] == [["images/case001_0.png", "cannot be read as an image"]]
    assert sum(record["split_sizes"].values()) == 39 and record["num_groups"] == 20
    assert record["class_counts"]["train"]["benign"] + record["class_counts"]["train"]["malignant"] == \
        record["split_sizes"]["train"]


def test_inspect_report(synthetic_dataset, tfds_dir):
    report = inspect_dataset("synthetic", data_dir=tfds_dir, image_size=32)
    assert report["info"] == synthetic_dataset.info.to_dict()
    for lesions in report["lesions"].values():  # every synthetic image has a lesion
        assert lesions["examples"] > 0 and lesions["empty_masks"] == 0
        assert 0 < lesions["mean_lesion_fraction"] < 0.3
    assert 50 < report["pixel_mean"][0] < 200


def test_cli_inspect_prints_the_split_table(tfds_dir):
    result = CliRunner().invoke(main, ["data", "inspect", "--data-dir", str(tfds_dir), "--image-size", "32"])
    assert result.exit_code == 0, result.output
    assert "dataset synthetic: 3 classes, 1 channel(s), 32x32 px, 700 patients" in result.output
    assert any(line.split()[0] == "train" and line.split()[1].isdigit() for line in result.output.splitlines())
    result = CliRunner().invoke(main, ["data", "inspect", "--data-dir", str(tfds_dir), "--image-size", "32",
                                       "--json"])
    assert json.loads(result.output)["info"]["num_classes"] == 3


def test_cli_reports_bad_files_in_one_line_without_traceback(folder_dataset):
    root = folder_dataset()
    (root / "masks" / "case002_1.png").unlink()
    result = CliRunner().invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: 1 file(s) in ")
    assert "have no mask in masks/: images/case002_1.png" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root),
                                       "--skip-bad-files", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad file(s):\n  images/case002_1.png: have no mask in masks/" in result.output
