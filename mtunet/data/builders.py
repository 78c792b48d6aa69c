"""The TFDS builders of the paper's public datasets, kept in the repository's ``datasets/<name>/`` folders in TFDS's
layout (``<name>_dataset_builder.py`` with a class ``Builder``, its test, README, citations, dummy data), and
preparing them from a hand download.

Prepared records go to the TFDS data directory (``$TFDS_DATA_DIR``, default ``~/tensorflow_datasets``), under
``<name>/<config>/<version>/``; once there, loading needs no download any more.
"""

import importlib.util
import sys
from pathlib import Path

from mtunet.errors import ConfigError, DataError

# The repository's datasets/ folder: the builders come with mtunet's source (install it from a checkout).
DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"


def builder_class(name: str):
    """The ``Builder`` class of ``datasets/<name>/<name>_dataset_builder.py``, imported once as the top-level module
    ``<name>_dataset_builder`` (TFDS takes the dataset name from the module name)."""
    module_name = f"{name}_dataset_builder"
    module = sys.modules.get(module_name)
    if module is None:
        path = DATASETS_DIR / name / f"{module_name}.py"
        if not path.is_file():
            raise DataError(f"{path} not found: the builder of dataset {name!r} comes with mtunet's source; expected "
                            "mtunet installed from a checkout of its repository (pip install -e .)")
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return module.Builder


def check_config(builder, name: str, config: str | None) -> str:
    """``config``, or the builder's default config when None; ``ConfigError`` listing the configs if unknown."""
    configs = list(builder.builder_configs)
    if config is None:
        return builder.default_builder_config.name
    if config not in configs:
        raise ConfigError(f"unknown config {config!r} of dataset {name!r}; expected one of: {', '.join(configs)}")
    return config


def prepare_builder(builder, data_dir=None, *, config: str | None = None, manual_dir=None):
    """``builder`` (a class) instantiated in the TFDS ``data_dir`` (None: TFDS's default) and prepared, offline.

    ``manual_dir`` is the hand download a manual-download builder reads when its records are not there yet;
    ``DataError`` if that folder is missing or empty.
    """
    import tensorflow_datasets as tfds  # imported here: it takes seconds, and only preparing needs it

    instance = builder(data_dir=None if data_dir is None else str(data_dir), config=config)
    if manual_dir is not None:
        manual_dir = Path(manual_dir).expanduser()
        if not instance.is_prepared() and not (manual_dir.is_dir() and any(manual_dir.iterdir())):
            raise DataError(f"download folder {manual_dir} does not exist or is empty; expected the files listed in "
                            f"{DATASETS_DIR / instance.name / 'README.md'}")
    instance.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False, manual_dir=None if manual_dir is None else str(manual_dir)))
    return instance


def left_out(info) -> list[tuple[str, str]]:
    """``[(id, reason), ...]``: the examples a builder left out while preparing (recorded in its metadata)."""
    metadata = info.metadata
    if metadata is None:
        return []
    return [(str(example_id), str(reason)) for example_id, reason in dict(metadata.items()).get("left_out", [])]


def recorded_splits(info) -> dict | None:
    """``{split: [id, ...]}``: the split a builder recorded as the dataset was published, or None if it has none."""
    metadata = info.metadata
    if metadata is None:
        return None
    return dict(metadata.items()).get("splits")
