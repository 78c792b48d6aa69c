"""Dataset registry: every name ``load_dataset`` accepts, and how its examples are read.

A new dataset is one entry here. Each declares whether it needs ``data_dir``, so no code decides from a name.
"""

import dataclasses
from collections.abc import Callable

from mtunet.data.store import ExampleStore
from mtunet.errors import ConfigError


def _read_synthetic(data_dir, **options) -> ExampleStore:
    from mtunet.data.synthetic_tfds import MtunetSynthetic
    from mtunet.data.tfds_source import read_tfds

    return read_tfds(MtunetSynthetic, data_dir, **options)


def _read_folder(data_dir, **options) -> ExampleStore:
    from mtunet.data.folder import read_folder

    return read_folder(data_dir, **options)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset ``load_dataset`` can read.

    Attributes:
        name: registry name, e.g. ``"folder"``.
        description: one line for listings and errors.
        read: ``read(data_dir, *, image_size, skip_bad_files, memory_limit) -> ExampleStore``: decodes every
            example, kept in memory if they take at most ``memory_limit`` bytes, else streamed.
        needs_data_dir: whether ``data_dir`` must be given (else it is optional: for TFDS builders it is the TFDS
            data directory, None meaning TFDS's default).
    """

    name: str
    description: str
    read: Callable[..., ExampleStore]
    needs_data_dir: bool


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("synthetic", "generated breast-ultrasound-like lesions, 3 classes, no files needed (TFDS "
                    "builder mtunet_synthetic)", _read_synthetic, needs_data_dir=False),
        DatasetSpec("folder", "your images: data_dir with images/, masks/ and labels.csv (id,label[,patient])",
                    _read_folder, needs_data_dir=True),
    ]
}


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of ``name``; ``ConfigError`` listing the valid names if there is none."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    return DATASETS[name]
