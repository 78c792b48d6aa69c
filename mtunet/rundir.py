"""The run directory: the names of the files a training run writes, writing them atomically, and the versions it
records."""

import csv
import json
import os
import pathlib
import tempfile

import mtunet

CONFIG_FILE, SPLITS_FILE, HISTORY_FILE, BEST_MODEL_FILE = "config.json", "splits.json", "history.csv", "best.keras"
SUMMARY_FILE, CURVES_FILE, BACKUP_DIR, LOG_DIR = "summary.json", "curves.png", "backup", "logs"
BACKUP_METADATA = "training_metadata.json"


def read_history(path) -> list[dict]:
    """The rows of a run's history.csv (``[]`` if there is none), ``epoch`` counted from 1 as everywhere in mtunet
    (Keras's progress line, summary.json's ``best_epoch``, the backups); a file written before mtunet numbered
    epochs so (its first epoch is 0) is read with its epochs shifted by 1."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        rows = [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()}
                for row in csv.DictReader(file)]
    shift = 1 if rows and rows[0]["epoch"] == 0 else 0
    return [{**row, "epoch": row["epoch"] + shift} for row in rows]


def best_history_row(history: list[dict]) -> dict:
    """The row of the epoch whose weights a run keeps (best.keras): the one of lowest validation loss."""
    return min(history, key=lambda row: row["val_loss"])


def write_atomically(path: pathlib.Path, write):
    """Calls ``write(temporary_path)`` then renames it to ``path``, so ``path`` is never left half-written."""
    path = pathlib.Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix="".join(path.suffixes))
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates the file private to its owner
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json(path, content):
    def write(temporary):
        with open(temporary, "w") as file:
            json.dump(content, file, indent=2, default=str)

    write_atomically(path, write)


def versions() -> dict:
    """Versions of mtunet, TensorFlow and Keras, as recorded in config.json and model_info.json."""
    import keras  # here, not at the top: the CLI reads the run-file names above without importing TensorFlow
    import tensorflow as tf

    return {"mtunet": mtunet.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}
