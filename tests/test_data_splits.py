import json

import numpy as np
import pytest

from mtunet.data import Splits, load_dataset
from mtunet.data.splits import make_splits
from mtunet.errors import ConfigError, DataError


def _fake_dataset(num_patients=60, images_per_patient=3, seed=0):
    """``(ids, labels, groups)``: patients of 3 classes in the proportions 1:2:3, several images each."""
    rng = np.random.default_rng(seed)
    patient_labels = rng.choice(3, size=num_patients, p=[1 / 6, 2 / 6, 3 / 6])
    groups = np.repeat([f"patient{index}" for index in range(num_patients)], images_per_patient)
    labels = np.repeat(patient_labels, images_per_patient)
    ids = np.array([f"image{index}" for index in range(len(labels))])
    return ids, labels, groups


def _check_partition(splits, ids, groups):
    """Every id in exactly one split and every patient in one split only."""
    all_ids = [example for name in ("train", "validation", "test") for example in splits[name]]
    assert sorted(all_ids) == sorted(ids.tolist())
    patient_of = dict(zip(ids.tolist(), groups.tolist()))
    patients = [{patient_of[example] for example in splits[name]} for name in ("train", "validation", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_hold_out_split_is_grouped_stratified_and_sized():
    ids, labels, groups = _fake_dataset()
    splits = make_splits(ids, labels, groups, grouped=True, dataset="fake", seed=3, validation_fraction=0.2,
                         test_fraction=0.25)
    _check_partition(splits, ids, groups)
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    overall = np.bincount(labels, minlength=3) / len(labels)
    for name, fraction in (("train", 0.55), ("validation", 0.2), ("test", 0.25)):
        assert len(splits[name]) == pytest.approx(fraction * len(ids), abs=3 * 3)  # within 3 patients
        share = np.bincount([label_of[example] for example in splits[name]], minlength=3) / len(splits[name])
        np.testing.assert_allclose(share, overall, atol=0.1)
    assert splits["train"] == sorted(splits["train"], key=lambda example: int(example[5:]))  # dataset order


def test_same_seed_same_split_other_seed_other_split():
    ids, labels, groups = _fake_dataset()
    first, again, other = (make_splits(ids, labels, groups, grouped=True, dataset="fake", seed=seed)
                           for seed in (1, 1, 2))
    assert dict(first) == dict(again)
    assert first["test"] != other["test"]


def test_k_fold_test_folds_cover_the_dataset_once():
    ids, labels, groups = _fake_dataset()
    tests = []
    for fold in range(5):
        splits = make_splits(ids, labels, groups, grouped=True, dataset="fake", fold=fold, num_folds=5,
                             validation_fraction=0.1)
        _check_partition(splits, ids, groups)
        assert (splits.fold, splits.num_folds) == (fold, 5)
        assert len(splits["validation"]) == pytest.approx(0.1 * len(ids), abs=3 * 3)
        tests += splits["test"]
    assert sorted(tests) == sorted(ids.tolist())


def test_ungrouped_datasets_split_by_example():
    ids, labels, _ = _fake_dataset()
    splits = make_splits(ids, labels, ids, grouped=False, dataset="fake", test_fraction=0.0)
    assert splits.grouping == "example" and splits["test"] == []
    assert len(splits["validation"]) == round(0.15 * len(ids))


# options, error message (regex)
BAD_OPTIONS = [
    ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\); received 1.0"),
    ({"test_fraction": -0.1}, r"test_fraction must be in \[0, 1\)"),
    ({"validation_fraction": 0.5, "test_fraction": 0.5}, r"must be below 1 to leave a training split"),
    ({"fold": 1}, r"fold and num_folds go together"),
    ({"fold": 5, "num_folds": 5}, r"0 <= fold < num_folds; received fold=5, num_folds=5"),
    ({"fold": 0, "num_folds": 2, "validation_fraction": 0.6}, r"leaves no training data"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_impossible_split_options_raise_config_error(options, message):
    ids, labels, groups = _fake_dataset()
    with pytest.raises(ConfigError, match=message):
        make_splits(ids, labels, groups, grouped=True, dataset="fake", **options)


def test_too_few_patients_of_a_class_raise_data_error():
    ids, labels, groups = _fake_dataset(num_patients=6)
    with pytest.raises(DataError, match=r"cannot hold out 15% of 6 groups for test, stratified by class"):
        make_splits(ids, labels, groups, grouped=True, dataset="fake")


def test_save_and_load_round_trip(tmp_path):
    ids, labels, groups = _fake_dataset()
    splits = make_splits(ids, labels, groups, grouped=True, dataset="fake", seed=4, fold=2, num_folds=4)
    splits.save(tmp_path / "run" / "splits.json")
    loaded = Splits.load(tmp_path / "run" / "splits.json")
    assert dict(loaded) == dict(splits)
    assert loaded.to_dict() == splits.to_dict()
    assert json.loads((tmp_path / "run" / "splits.json").read_text())["grouping"] == "patient"


def test_load_dataset_writes_then_reuses_splits_path(tmp_path, folder_dataset):
    root = folder_dataset(num_patients=20)
    path = tmp_path / "splits.json"
    first = load_dataset("folder", data_dir=root, image_size=16, seed=1, splits_path=path)
    assert path.exists()
    # another seed is ignored: the file wins
    again = load_dataset("folder", data_dir=root, image_size=16, seed=2, splits_path=path)
    assert dict(again.splits) == dict(first.splits) and again.splits.seed == 1


def test_splits_naming_unknown_ids_raise_data_error(tmp_path, folder_dataset):
    root = folder_dataset(num_patients=20)
    record = {"dataset": "folder", "seed": 0, "grouping": "patient", "validation_fraction": 0.15,
              "test_fraction": 0.15, "splits": {"train": ["case000_0", "gone1", "gone2"], "validation": ["gone3"],
                                                 "test": ["gone4", "gone5"]}}
    (tmp_path / "splits.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"splits.json names 5 id\(s\) that are not in the dataset: "
                                        r"gone1, gone2, gone3 and 2 more"):
        load_dataset("folder", data_dir=root, image_size=16, splits_path=tmp_path / "splits.json")
    record["splits"] = {"train": ["case000_0"], "validation": ["case000_0"], "test": []}
    (tmp_path / "splits.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"puts 1 id\(s\) in more than one split: case000_0"):
        load_dataset("folder", data_dir=root, image_size=16, splits_path=tmp_path / "splits.json")
    (tmp_path / "splits.json").write_text("{not json")
    with pytest.raises(DataError, match=r"splits.json is not a splits file \(JSONDecodeError"):
        load_dataset("folder", data_dir=root, image_size=16, splits_path=tmp_path / "splits.json")
