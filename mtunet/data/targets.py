"""Targets beside the class label and the mask: further columns of a folder dataset's ``labels.csv``, declared in its
``columns.json``, each learnt by a head of its own.

``columns.json`` maps a ``labels.csv`` column to what it holds::

    {"birads": {"kind": "ordinal", "classes": ["3", "4", "5"]},
     "histology": {"kind": "categorical"},
     "x": {"kind": "continuous", "head": "position"},
     "y": {"kind": "continuous", "head": "position"}}

``kind`` is ``categorical`` (class names), ``ordinal`` (ordered class names, grades: learnt by a classification or,
with ``--ordinal-loss coral``, an ordinal head, and evaluated as grades) or ``continuous`` (numbers, learnt by a
regression head). ``head`` names the head (default: the
column's name); continuous columns naming one head are its targets, in the file's order. ``classes`` lists the class
names in the order of their indices (default: sorted, numerically where every value is a number). An empty cell is a
missing value: that example does not count in that head's loss or metrics.
"""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from mtunet.data.problems import Problems, name_some
from mtunet.errors import DataError

COLUMNS_FILE = "columns.json"
KINDS = ("categorical", "ordinal", "continuous")
LABEL_KINDS = ("categorical", "ordinal")  # of the class label (columns.json's "label" entry)
# the heads every multi-task model has: a further target may not take their names
RESERVED_NAMES = ("label", "mask")
ROLE_COLUMNS = ("id", "label", "patient", "group")  # labels.csv columns that are not further targets
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MISSING_CLASS = -1  # class index of a missing categorical value; its one-hot vector is all zeros


@dataclasses.dataclass(frozen=True)
class TargetHead:
    """A head's targets in a dataset.

    Attributes:
        name: the head's name, and the key of its targets in the pipeline's batches.
        kind: one of ``KINDS``.
        columns: the ``labels.csv`` column(s) it learns: one for a categorical or ordinal head, one or more for a
            continuous one.
        class_names: names of the class indices (categorical and ordinal), else None.
    """

    name: str
    kind: str
    columns: tuple[str, ...]
    class_names: tuple[str, ...] | None = None

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "columns": list(self.columns),
                "class_names": None if self.class_names is None else list(self.class_names)}

    @classmethod
    def from_dict(cls, record: dict) -> "TargetHead":
        names = record.get("class_names")
        return cls(record["name"], record["kind"], tuple(record["columns"]),
                   None if names is None else tuple(names))


def read_target_heads(path: Path, table_columns) -> tuple[list[dict], str]:
    """``(declarations, label kind)`` of the ``columns.json`` at ``path``: its further targets grouped by head
    (``declare_target_heads``) and the kind of the class label (``label_kind``); ``([], "categorical")`` if there is
    no such file; ``DataError`` for a file that is not JSON."""
    if not path.exists():
        return [], "categorical"
    try:
        declared = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as JSON ({error}); expected {{column: {{\"kind\": ...}}}}") from None
    kind = label_kind(declared, str(path))
    further = {column: entry for column, entry in declared.items() if column != "label"}
    return declare_target_heads(further, table_columns, str(path)), kind


def label_kind(declared, where: str) -> str:
    """The kind of the class label that ``declared`` (``columns.json``'s content) gives as ``{"label": {"kind":
    ...}}``: ``"ordinal"`` (grades: an ordinal head with ``--ordinal-loss coral``, evaluated as grades) or
    ``"categorical"`` (the default); ``DataError`` for anything else."""
    if not isinstance(declared, dict) or "label" not in declared:
        return "categorical"
    entry = declared["label"]
    if not isinstance(entry, dict) or set(entry) != {"kind"} or entry["kind"] not in LABEL_KINDS:
        raise DataError(f"{where}: column 'label' has {entry!r}; expected {{\"kind\": \"ordinal\"}} or "
                        "{\"kind\": \"categorical\"} (the classes and their order come from classes.txt)")
    return entry["kind"]


def declare_target_heads(declared, table_columns, where: str) -> list[dict]:
    """``declared`` (``columns.json``'s content, or a builder's ``TARGET_COLUMNS``) grouped by head: ``[{"name",
    "kind", "columns", "classes"}]`` (``classes`` None where none is given). ``DataError`` naming ``where`` and the
    entry for a column not in ``table_columns``, an unknown kind or key, or a head name that is taken or not a
    name."""
    if not isinstance(declared, dict) or not all(isinstance(entry, dict) for entry in declared.values()):
        raise DataError(f"{where} must map each column to an object such as {{\"kind\": \"continuous\"}}")
    absent = [column for column in declared if column not in table_columns]
    if absent:
        raise DataError(f"{where} names column(s) {', '.join(absent)} that labels.csv lacks; its columns are "
                        f"{', '.join(map(str, table_columns))}")
    roles = [column for column in declared if column in ROLE_COLUMNS]
    if roles:
        raise DataError(f"{where} declares column(s) {', '.join(roles)}, which labels.csv uses for ids, the class "
                        "label and patients; expected only further target columns")
    heads = {}
    for column, entry in declared.items():
        entry_where = f"{where}: column {column!r}"
        unknown = sorted(set(entry) - {"kind", "head", "classes"})
        if unknown:
            raise DataError(f"{entry_where} has unknown key(s) {', '.join(unknown)}; expected kind, head and classes")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise DataError(f"{entry_where} has kind {kind!r}; expected one of: {', '.join(KINDS)}")
        name = entry.get("head", column)
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise DataError(f"{entry_where} names head {name!r}; expected a name of letters, digits and _ other than "
                            f"{' and '.join(RESERVED_NAMES)}")
        classes = entry.get("classes")
        if classes is not None and (kind == "continuous" or not isinstance(classes, list) or len(classes) < 2
                                    or len(set(map(str, classes))) < len(classes)):
            raise DataError(f"{entry_where} has classes {classes!r}; expected a list of 2 or more distinct class "
                            "names, for a categorical or ordinal column only")
        if name in heads and (kind != "continuous" or heads[name]["kind"] != "continuous"):
            raise DataError(f"{entry_where} shares head {name!r} with column {heads[name]['columns'][0]!r}; only "
                            "continuous columns may share a head")
        head = heads.setdefault(name, {"name": name, "kind": kind, "columns": [], "classes": None})
        head["columns"].append(column)
        if classes is not None:
            head["classes"] = [str(value) for value in classes]
    return list(heads.values())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _class_order(values) -> list[str]:
    """The distinct values in sorted order: numerically when every one is a number."""
    distinct = sorted(set(values))
    return sorted(distinct, key=float) if all(map(_is_number, distinct)) else distinct


def parse_targets(declarations: list[dict], rows: list[dict], problems: Problems,
                  location=lambda example: f"labels.csv:{example}") -> tuple[list[TargetHead], set]:
    """``(heads, bad ids)``: the ``TargetHead`` of each declaration, and the ids of ``rows`` (each ``{"id",
    "cells": {column: text}}``) with a value that is not a number (continuous) or not in ``classes``; their problems
    go to ``problems``, each at ``location(id)``. Each row gets ``targets``: ``{head: class index}``
    (``MISSING_CLASS`` if missing) or ``{head: [value, ...]}`` (NaN if missing)."""
    heads, bad = [], set()
    for declaration in declarations:
        name, columns = declaration["name"], declaration["columns"]
        if declaration["kind"] == "continuous":
            for row in rows:
                values = []
                for column in columns:
                    text = row["cells"][column].strip()
                    if text and not _is_number(text):
                        problems.add(location(row["id"]), f"have a non-numeric value in column {column}",
                                     "a number or an empty cell (missing)")
                        bad.add(row["id"])
                    values.append(float(text) if text and _is_number(text) else np.nan)
                row.setdefault("targets", {})[name] = values
            heads.append(TargetHead(name, "continuous", tuple(columns)))
            continue
        column = columns[0]
        texts = [row["cells"][column].strip() for row in rows]
        classes = declaration["classes"] or _class_order(text for text in texts if text)
        for row, text in zip(rows, texts):
            if text and text not in classes:
                problems.add(location(row["id"]), f"have a value in column {column} that is not a class",
                             f"one of {', '.join(classes)} or an empty cell (missing)")
                bad.add(row["id"])
            row.setdefault("targets", {})[name] = classes.index(text) if text in classes else MISSING_CLASS
        if len(classes) < 2:
            raise DataError(f"column {column} of labels.csv has the value(s) {name_some(classes)}; expected at least "
                            "2 classes")
        heads.append(TargetHead(name, declaration["kind"], (column,), tuple(classes)))
    return heads, bad


def target_arrays(heads, rows) -> dict[str, np.ndarray]:
    """``{head: array}`` of ``rows``' targets: ``(N,)`` int64 class indices or ``(N, columns)`` float64 values."""
    return {head.name: np.array([row["targets"][head.name] for row in rows],
                                dtype=np.float64 if head.continuous else np.int64).reshape(
                                    (len(rows), len(head.columns)) if head.continuous else (len(rows),))
            for head in heads}
