import dataclasses
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from mtunet.data import DATASETS, DatasetInfo, inspect_dataset, load_dataset
from mtunet.errors import ConfigError


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown dataset 'isic'; expected one of: synthetic, synthetic_multiclass, "
                                          r"folder"):
        load_dataset("isic")
    assert {"synthetic", "synthetic_multiclass", "folder"} <= set(DATASETS)


def test_folder_needs_data_dir_and_image_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"dataset 'folder' needs data_dir \(--data-dir\)"):
        load_dataset("folder")
    with pytest.raises(ConfigError, match=r"image_size must be a positive integer; received 0"):
        load_dataset("synthetic", image_size=0)


def test_info_is_json_serialisable_and_lists_every_skipped_file(folder_dataset):
    root = folder_dataset(num_patients=20)
    (root / "images" / "case001_0.png").write_bytes(b"broken")
    (root / "masks" / "case007_1.png").unlink()
    (root / "images" / "Thumbs.db").write_bytes(b"")
    dataset = load_dataset("folder", data_dir=root, image_size=16, skip_bad_files=True)
    record = json.loads(json.dumps(dataset.info.to_dict()))
    assert record["skipped"] == [["images/case007_1.png", "have no mask in masks/"],
                                 ["images/case001_0.png", "cannot be read as an image"],
                                 ["images/Thumbs.db", "are not PNG, JPEG, BMP or TIFF files"]]
    assert sum(record["split_sizes"].values()) == 38 and record["num_groups"] == 20
    assert record["storage"] == "memory"
    assert record["class_counts"]["train"]["benign"] + record["class_counts"]["train"]["malignant"] == \
        record["split_sizes"]["train"]


def test_info_round_trips_through_to_dict_and_reads_old_records_as_binary(folder_dataset):
    info = load_dataset("folder", data_dir=folder_dataset(), image_size=16, skip_bad_files=True).info
    record = json.loads(json.dumps(info.to_dict()))
    assert record["mask_classes"] == ["lesion"] and not info.multiclass_masks
    assert DatasetInfo.from_dict(record) == info
    del record["mask_classes"]  # a run written before masks could be multi-class
    assert DatasetInfo.from_dict(record) == info
    multiclass = dataclasses.replace(info, mask_classes=("rim", "core"))
    assert multiclass.multiclass_masks
    assert DatasetInfo.from_dict(json.loads(json.dumps(multiclass.to_dict()))) == multiclass
    with pytest.raises(ConfigError, match=r"^dataset record lacks storage; expected the fields of "
                                          r"DatasetInfo.to_dict\(\)$"):
        DatasetInfo.from_dict({key: value for key, value in record.items() if key != "storage"})
    with pytest.raises(ConfigError, match=r"^dataset record has unknown field\(s\) colour;"):
        DatasetInfo.from_dict({**record, "colour": True})


def test_inspect_report(synthetic_dataset, tfds_dir):
    report = inspect_dataset("synthetic", data_dir=tfds_dir, image_size=32)
    assert report["info"] == synthetic_dataset.info.to_dict()
    assert report["groups"] == {"train": 490, "validation": 105, "test": 105, "total": 700}
    assert report["image_sizes"] == {"distinct": 1, "height": [128, 128], "width": [128, 128],
                                     "most_common": [[128, 128, 1400]]}
    coverage = report["mask_coverage"]
    assert set(coverage) == {"cyst", "fibroadenoma", "carcinoma", "all"} and coverage["all"]["examples"] == 1400
    assert coverage["all"]["empty_masks"] == 0
    assert 0 < coverage["all"]["min_lesion_fraction"] < 0.01 < coverage["all"]["mean_lesion_fraction"] < 0.1
    assert 50 < report["pixel_mean"][0] < 200 and report["pixel_std"][0] > 10
    assert report["mask_classes"] == ["lesion"]
    assert report["mask_class_fractions"] == {"lesion": pytest.approx(coverage["all"]["mean_lesion_fraction"])}


def test_inspect_reports_stored_sizes_of_a_folder(folder_dataset):
    root = folder_dataset(num_patients=20)
    cv2.imwrite(str(root / "images" / "case000_0.png"), np.zeros((30, 20), np.uint8))
    cv2.imwrite(str(root / "masks" / "case000_0.png"), np.zeros((30, 20), np.uint8))
    report = inspect_dataset("folder", data_dir=root, image_size=16)
    assert report["image_sizes"] == {"distinct": 2, "height": [30, 40], "width": [20, 56],
                                     "most_common": [[40, 56, 39], [30, 20, 1]]}
    assert report["mask_coverage"]["benign"]["empty_masks"] == 1


def test_cli_inspect_prints_counts_patients_sizes_coverage_and_problems(tfds_dir):
    result = CliRunner().invoke(main, ["data", "inspect", "--data-dir", str(tfds_dir), "--image-size", "32"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "dataset synthetic: 3 classes, 1 channel(s), served at 32x32 px, decoded examples held in memory" in lines
    assert "patients/groups: 700 (train 490, validation 105, test 105); splits grouped by patient" in lines
    assert lines[2].split() == ["split", "cyst", "fibroadenoma", "carcinoma", "total"]
    rows = {line.split()[0]: [int(value) for value in line.split()[1:]] for line in lines[3:7]}
    assert rows["train"][-1] == 980 and rows["total"][-1] == 1400
    assert [sum(column) for column in zip(rows["train"], rows["validation"], rows["test"])] == rows["total"]
    assert any(line.startswith("image sizes as stored (height x width): 1 distinct") for line in lines)
    assert any(line.split()[:3] == ["all", "1400", "0"] for line in lines)  # mask coverage, no empty mask
    assert lines[-1] == "problems: none"
    result = CliRunner().invoke(main, ["data", "inspect", "--data-dir", str(tfds_dir), "--image-size", "32",
                                       "--json"])
    assert json.loads(result.output)["info"]["num_classes"] == 3


def test_cli_reports_bad_files_in_one_line_without_traceback(folder_dataset):
    root = folder_dataset()
    (root / "masks" / "case002_1.png").unlink()
    (root / "images" / "case003_0.png").write_bytes(b"broken")
    with open(root / "labels.csv", "a") as labels:
        labels.write("case999_0,benign,case999\n")  # a row without an image
    result = CliRunner().invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root)])
    assert result.exit_code == 1
    # every bad file at once, grouped by kind, and the option (as the command line spells it) that leaves them out
    lines = result.output.splitlines()
    assert lines[0] == f"3 bad file(s) in {root}:"
    assert ("  1 have no mask in masks/ (expected masks/<id>.<ext> for every image, or --allow-missing mask to keep "
            "images without one):") in lines
    assert "    images/case002_1.png" in lines and "    images/case003_0.png" in lines
    assert "    labels.csv:case999_0" in lines
    assert lines[-1] == (f"Error: 3 bad file(s) in {root}, listed above; fix them, or pass --skip-bad-files to leave "
                         "them out")
    assert "skip_bad_files" not in result.output and "Traceback" not in result.output
    train = CliRunner().invoke(main, ["train", "--dataset", "folder", "--data-dir", str(root), "--weights", "none",
                                      "--image-size", "32", "--epochs", "1", "--output-dir", str(root / "run")])
    assert train.exit_code == 1 and len(train.output.strip().splitlines()) == 1, train.output
    for kind in ("1 have no mask in masks/", "1 cannot be read as an image", "1 name no image in images/",
                 "Pass --skip-bad-files to leave them out"):
        assert kind in train.output, kind
    assert not (root / "run").exists() or not any((root / "run").iterdir())
    result = CliRunner().invoke(main, ["data", "inspect", "--dataset", "folder", "--data-dir", str(root),
                                       "--skip-bad-files", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    assert result.output.endswith("problems: 3 file(s) left out: 1 have no mask in masks/; 1 name no image in "
                                  "images/; 1 cannot be read as an image\n  images/case002_1.png: have no mask in "
                                  "masks/\n  labels.csv:case999_0: name no image in images/\n"
                                  "  images/case003_0.png: cannot be read as an image\n")
