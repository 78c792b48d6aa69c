"""Train / validation / test splits that keep each patient's images together and each class's share alike.

A hold-out split takes ``test_fraction`` of the patients for test, then ``validation_fraction`` (of the whole
dataset) for validation; K-fold cross-validation takes fold ``k`` of ``StratifiedGroupKFold`` for test instead.
Patients are stratified by their most common class (an unlabelled image counts as its patient's most common class).
Without patient ids, every example is its own group. A dataset published with its own split (a challenge's train /
validation / test) keeps it for hold-out runs (``published_splits``); K-fold cross-validation pools all its examples.
"""

import collections
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from mtunet.data.problems import name_some
from mtunet.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
FORMAT_VERSION = 1


class Splits(Mapping):
    """The example ids of each split, ``{"train": [...], "validation": [...], "test": [...]}``, and how they were made.

    Attributes:
        dataset: name of the dataset the splits were made for.
        seed: random seed of the split.
        grouping: ``"patient"`` (no patient in two splits), ``"example"`` (no patient ids were known) or
            ``"published"`` (the dataset's own split, kept as published).
        validation_fraction, test_fraction: fractions asked for (``test_fraction`` is unused with K-fold).
        fold, num_folds: the test fold and number of folds for K-fold cross-validation, else None.
    """

    def __init__(self, ids: Mapping, *, dataset: str, seed: int, grouping: str, validation_fraction: float,
                 test_fraction: float, fold: int | None = None, num_folds: int | None = None):
        self._ids = {name: [str(example) for example in ids[name]] for name in SPLIT_NAMES}
        self.dataset = dataset
        self.seed = seed
        self.grouping = grouping
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.fold = fold
        self.num_folds = num_folds

    def __getitem__(self, name):
        return self._ids[name]

    def __iter__(self):
        return iter(self._ids)

    def __len__(self):
        return len(self._ids)

    def __repr__(self):
        sizes = ", ".join(f"{name}={len(ids)}" for name, ids in self._ids.items())
        return f"Splits({sizes}, dataset={self.dataset!r}, seed={self.seed}, grouping={self.grouping!r})"

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION, "dataset": self.dataset, "seed": self.seed, "grouping": self.grouping,
            "stratified_by": None if self.grouping == "published" else "class",
            "validation_fraction": self.validation_fraction, "test_fraction": self.test_fraction, "fold": self.fold,
            "num_folds": self.num_folds,
            "splits": self._ids,
        }

    def save(self, path) -> None:
        """Writes the splits as JSON to ``path`` (its folder is created if needed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> "Splits":
        """Reads splits saved by :meth:`save`; ``DataError`` if ``path`` is not such a file."""
        try:
            record = json.loads(Path(path).read_text())
            return cls(
                record["splits"], dataset=record["dataset"], seed=record["seed"], grouping=record["grouping"],
                validation_fraction=record["validation_fraction"], test_fraction=record["test_fraction"],
                fold=record.get("fold"), num_folds=record.get("num_folds"),
            )
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{path} is not a splits file ({type(error).__name__}: {error}); expected the JSON "
                            f"written by Splits.save with the keys dataset, seed, grouping and splits "
                            f"({'/'.join(SPLIT_NAMES)})") from None

    def check(self, dataset_ids, source: str) -> None:
        """Raises ``DataError`` if an id is in two splits or not in ``dataset_ids``; ``source`` names the splits."""
        known = set(dataset_ids)
        counts = collections.Counter(example for ids in self._ids.values() for example in ids)
        missing = [example for example in counts if example not in known]
        if missing:
            raise DataError(f"{source} names {len(missing)} id(s) that are not in the dataset: {name_some(missing)}; "
                            f"expected ids of dataset {self.dataset!r} (these splits were made with seed {self.seed})")
        repeated = [example for example, count in counts.items() if count > 1]
        if repeated:
            raise DataError(f"{source} puts {len(repeated)} id(s) in more than one split: {name_some(repeated)}; "
                            "expected each example in one split")
        unused = len(known) - len(counts)
        if unused:
            logger.warning("%s leaves %d example(s) of the dataset out of every split", source, unused)


def check_split_options(validation_fraction, test_fraction, fold, num_folds) -> None:
    """Raises ``ConfigError`` unless the fractions and fold options describe a possible split."""
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1); received {value}")
    if (fold is None) != (num_folds is None):
        raise ConfigError(f"fold and num_folds go together; received fold={fold}, num_folds={num_folds}")
    if fold is None:
        if validation_fraction + test_fraction >= 1:
            raise ConfigError(f"validation_fraction + test_fraction must be below 1 to leave a training split; "
                              f"received {validation_fraction} + {test_fraction}")
        return
    if num_folds < 2 or not 0 <= fold < num_folds:
        raise ConfigError(f"K-fold needs num_folds >= 2 and 0 <= fold < num_folds; "
                          f"received fold={fold}, num_folds={num_folds}")
    if validation_fraction >= 1 - 1 / num_folds:
        raise ConfigError(f"validation_fraction {validation_fraction} leaves no training data once fold {fold} of "
                          f"{num_folds} is held out for test; expected below {1 - 1 / num_folds:.3f}")


def _hold_out(positions, labels, groups, fraction, seed, what):
    """Splits ``positions`` into ``(kept, held)`` by whole groups, ``fraction`` of the groups held, stratified."""
    if fraction == 0:
        return positions, positions[:0]
    group_names, group_of = np.unique(groups[positions], return_inverse=True)
    counts = np.zeros((len(group_names), labels.max() + 1), np.int64)
    np.add.at(counts, (group_of, labels[positions]), 1)
    group_labels = counts.argmax(axis=1)  # each group's most common class
    try:
        _, held_groups = train_test_split(np.arange(len(group_names)), test_size=fraction,
                                          stratify=group_labels, random_state=seed)
    except ValueError as error:
        raise DataError(f"cannot hold out {fraction:.0%} of {len(group_names)} groups for {what}, stratified by "
                        f"class ({error}); expected more examples of each class, or a larger fraction") from None
    held = np.isin(group_of, held_groups)
    return positions[~held], positions[held]


def _fill_missing_labels(labels, groups) -> np.ndarray:
    """``labels`` with each -1 (no label) replaced by the most common label of its group, or of all examples for a
    group without any: what the split stratifies an unlabelled example by (a stratum of its own could be too small
    to split)."""
    missing = labels < 0
    if not missing.any():
        return labels
    overall = np.bincount(labels[~missing]).argmax()
    filled = labels.copy()
    for group in np.unique(groups[missing]):
        members = groups == group
        known = labels[members & ~missing]
        filled[members & missing] = np.bincount(known).argmax() if known.size else overall
    return filled


def _test_fold(labels, groups, fold, num_folds, seed):
    """``(rest, test)`` positions: fold ``fold`` of a stratified, grouped ``num_folds``-fold split."""
    folds = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    try:
        rest, test = list(folds.split(np.zeros(len(labels)), labels, groups))[fold]
    except ValueError as error:
        raise DataError(f"cannot make {num_folds} folds ({error}); expected at least {num_folds} groups") from None
    return rest, test


def published_splits(ids: Mapping, *, dataset: str, seed: int) -> Splits:
    """The split a dataset was published with, ``{split: [id, ...]}``; its fractions are recorded as they are."""
    total = sum(len(ids[name]) for name in SPLIT_NAMES)
    return Splits(ids, dataset=dataset, seed=seed, grouping="published",
                  validation_fraction=round(len(ids["validation"]) / total, 4),
                  test_fraction=round(len(ids["test"]) / total, 4))


def make_splits(ids, labels, groups, *, grouped: bool, dataset: str, seed: int = 0,
                validation_fraction: float = 0.15, test_fraction: float = 0.15,
                fold: int | None = None, num_folds: int | None = None) -> Splits:
    """Splits a dataset by groups (patients), stratified by class; ids keep their dataset order in each split.

    Args:
        ids, labels, groups: ``(N,)`` example ids, int class indices (-1: no label) and group (patient) of each
            example.
        grouped: whether ``groups`` are real patient ids (recorded in the splits).
        dataset: the dataset's name (recorded).
        seed: random seed.
        validation_fraction: share of the whole dataset for validation.
        test_fraction: share of the whole dataset for test (hold-out only).
        fold, num_folds: K-fold cross-validation: fold ``fold`` of ``num_folds`` is the test split.
    """
    check_split_options(validation_fraction, test_fraction, fold, num_folds)
    ids, labels, groups = np.asarray(ids), np.asarray(labels), np.asarray(groups)
    labels = _fill_missing_labels(labels, groups)
    everything = np.arange(len(ids))
    if fold is None:
        rest, test = _hold_out(everything, labels, groups, test_fraction, seed, "test")
    else:
        rest, test = _test_fold(labels, groups, fold, num_folds, seed)
    train, validation = _hold_out(rest, labels, groups, validation_fraction * len(ids) / len(rest), seed,
                                  "validation")
    return Splits(
        {"train": ids[np.sort(train)], "validation": ids[np.sort(validation)], "test": ids[np.sort(test)]},
        dataset=dataset, seed=seed, grouping="patient" if grouped else "example",
        validation_fraction=validation_fraction, test_fraction=test_fraction, fold=fold, num_folds=num_folds,
    )
