"""Dataset registry: every name ``load_dataset`` accepts, and how its examples are read.

A new dataset is one entry here. Each declares whether it needs ``data_dir`` and whether that is a hand download
prepared by a TFDS builder in ``datasets/<name>/``, so no code decides from a name. Such datasets take a builder
config in TFDS's ``name/config`` form, e.g. ``"isic2018/task1_512"``.
"""

import dataclasses
import functools
from collections.abc import Callable

from mtunet.data.builders import builder_class, check_config, prepare_builder
from mtunet.data.folder import read_folder
from mtunet.data.store import ExampleStore
from mtunet.data.tfds_source import read_tfds
from mtunet.errors import ConfigError


# The synthetic builders import tensorflow_datasets, which takes seconds: imported on first read, so that the CLI's
# --help and config checks, which read this registry, do not pay for it.
def _read_synthetic(data_dir, **options) -> ExampleStore:
    from mtunet.data.synthetic_tfds import MtunetSynthetic

    return read_tfds(MtunetSynthetic, data_dir, **options)


def _read_synthetic_multiclass(data_dir, **options) -> ExampleStore:
    from mtunet.data.synthetic_tfds import MtunetSyntheticMulticlass

    return read_tfds(MtunetSyntheticMulticlass, data_dir, **options)


def _read_download(name: str) -> Callable[..., ExampleStore]:
    """``read(data_dir, *, config=None, ...)`` of the builder ``datasets/<name>/``: ``data_dir`` is the download."""

    def read(data_dir, *, config: str | None = None, **options) -> ExampleStore:
        builder = builder_class(name)
        return read_tfds(builder, None, config=check_config(builder, name, config), manual_dir=data_dir, **options)

    return read


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset ``load_dataset`` can read.

    Attributes:
        name: registry name, e.g. ``"folder"``.
        description: one line for listings and errors.
        read: ``read(data_dir, *, image_size, skip_bad_files, memory_limit, crop_fov) -> ExampleStore``: decodes every
            example, kept in memory if they take at most ``memory_limit`` bytes, else streamed.
        needs_data_dir: whether ``data_dir`` must be given (else it is optional: for TFDS builders it is the TFDS
            data directory, None meaning TFDS's default).
        manual_download: whether ``data_dir`` is a hand download that the TFDS builder ``datasets/<name>/`` prepares
            into the TFDS data directory (``$TFDS_DATA_DIR``, default ``~/tensorflow_datasets``) on first use;
            ``read`` then takes ``config``.
        partial_labels: whether ``read`` takes ``allow_missing`` (keeps images that lack some targets).
    """

    name: str
    description: str
    read: Callable[..., ExampleStore]
    needs_data_dir: bool
    manual_download: bool = False
    partial_labels: bool = False


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("synthetic", "generated breast-ultrasound-like lesions, 3 classes, no files needed (TFDS "
                    "builder mtunet_synthetic)", _read_synthetic, needs_data_dir=False),
        DatasetSpec("synthetic_multiclass", "synthetic with a brighter lesion core: masks of 2 classes, rim and core, "
                    "no files needed (TFDS builder mtunet_synthetic_multiclass)", _read_synthetic_multiclass,
                    needs_data_dir=False),
        DatasetSpec("folder", "your images: data_dir with images/, masks/ and labels.csv (id,label[,patient])",
                    read_folder, needs_data_dir=True, partial_labels=True),
        DatasetSpec("isic2017", "ISIC 2017 dermoscopy, melanoma / seborrheic keratosis / nevus, lesion masks, the "
                    "challenge's split: data_dir is the ISIC 2017 download (datasets/isic2017/README.md)",
                    _read_download("isic2017"), needs_data_dir=True, manual_download=True),
        DatasetSpec("isic2018", "ISIC 2018 dermoscopy, 7 diagnoses, lesion masks: data_dir is the ISIC 2018 / "
                    "HAM10000 download (datasets/isic2018/README.md)", _read_download("isic2018"),
                    needs_data_dir=True, manual_download=True),
        DatasetSpec("jsrt", "JSRT chest radiographs, nodule state with subtlety, diagnosis, size and position "
                    "heads, nodule or SCR lung masks: data_dir is Kaggle's JSRT copy (datasets/jsrt/README.md)",
                    _read_download("jsrt"), needs_data_dir=True, manual_download=True),
        DatasetSpec("lgg", "TCGA-LGG brain MRI slices, FLAIR abnormality masks: data_dir is Kaggle's "
                    "lgg-mri-segmentation download (datasets/lgg/README.md)", _read_download("lgg"),
                    needs_data_dir=True, manual_download=True),
        DatasetSpec("panda", "PANDA prostate biopsies, ISUP grade 0-5, cancer masks: data_dir is the Kaggle "
                    "competition download (datasets/panda/README.md)", _read_download("panda"),
                    needs_data_dir=True, manual_download=True),
        DatasetSpec("siim_acr", "SIIM-ACR chest X-rays, pneumothorax yes/no and masks: data_dir is the DICOM or PNG "
                    "download (datasets/siim_acr/README.md)", _read_download("siim_acr"),
                    needs_data_dir=True, manual_download=True),
    ]
}


def split_name(name: str) -> tuple[str, str | None]:
    """``("isic2018", "task1_512")`` for ``"isic2018/task1_512"``; ``(name, None)`` without a config."""
    base, _, config = name.partition("/")
    return base, config or None


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of ``name``, or of ``"name/config"`` with ``read`` bound to that config.

    ``ConfigError`` listing the valid names if there is none, or if a config is given to a dataset without configs
    (an unknown config is reported when the dataset is read).
    """
    base, config = split_name(name)
    if base not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    spec = DATASETS[base]
    if config is None:
        return spec
    if not spec.manual_download:
        raise ConfigError(f"dataset {base!r} has no configs; received {name!r}")
    return dataclasses.replace(spec, name=name, read=functools.partial(spec.read, config=config))


def prepare_dataset(name: str, manual_dir, *, config: str | None = None):
    """Prepares the TFDS records of a manual-download dataset from its hand download; returns the prepared builder.

    Args:
        name: a registry name whose data comes from a download, e.g. ``"isic2018"`` (or ``"isic2018/task1_512"``).
        manual_dir: the folder holding the download, laid out as ``datasets/<name>/README.md`` says.
        config: a builder config, e.g. ``"task1_512"`` (None: the one in ``name``, else the default).

    Examples::

        builder = prepare_dataset("lgg", "~/data/lgg-mri-segmentation", config="histology")
        builder.info.splits["train"].num_examples, left_out(builder.info)
    """
    base, named_config = split_name(name)
    spec = DATASETS.get(base)
    if spec is None or not spec.manual_download:
        choices = [spec.name for spec in DATASETS.values() if spec.manual_download]
        raise ConfigError(f"dataset {name!r} is not prepared from a download; expected one of: {', '.join(choices)}")
    if named_config and config and named_config != config:
        raise ConfigError(f"dataset {name!r} and --config {config!r} name different configs; give one")
    builder = builder_class(base)
    config = check_config(builder, base, config or named_config)
    return prepare_builder(builder, config=config, manual_dir=manual_dir)
