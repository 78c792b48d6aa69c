"""The options of a training run (``TrainConfig``) and reading them back from a run directory.

This module imports neither Keras nor TensorFlow, so that the CLI builds its options from these fields and
``mtunet --help`` stays instant; ``TrainConfig.validate`` reads the model registries, which import Keras.
"""

import dataclasses
import datetime
import json
import pathlib

from mtunet.errors import ConfigError
from mtunet.options import (
    CLASS_WEIGHTS, DICE_VARIANTS, FLIP_MODES, OPTIMIZERS, ORDINAL_LOSSES, SEGMENTATION_LOSSES, STRATEGIES, TASKS,
    check_allow_missing, check_preprocessing,
)
from mtunet.rundir import CONFIG_FILE
from mtunet.training.recipes import RECIPES


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; the defaults are recipe ``mtunet``'s (``mtunet.training.recipes``: the
    multi-task U-Net paper's with the changes measured better), and ``from_recipe`` starts from another recipe's.

    ``recipe`` names the recipe the options started from (``mtunet.RECIPES``; None becomes ``"mtunet"``, whose
    options are these defaults). The model is preset ``architecture`` with ``encoder`` and, where given, ``decoder``
    and ``skip`` instead of the preset's (``mtunet.PRESETS``, ``mtunet.DECODERS``, ``mtunet.SKIPS``).

    ``loss_weights`` is ``(segmentation, classification)``, by head role (a regression head weighs 1), or
    ``{head name: weight}`` (a head not named weighs 1); ``output_dir`` is the run directory itself (default
    ``runs/<date>-<encoder>-<dataset>``). ``fold`` and ``num_folds`` hold fold ``fold`` (0-based) of a patient-grouped
    K-fold split out as the test split; ``split_seed`` seeds the split (None: ``seed``), so that runs trained with
    different seeds can share their splits; ``splits_file`` takes the splits from a ``splits.json`` instead (e.g.
    another run's, with fewer training images). ``allow_missing`` lists the targets some images may lack
    (``mtunet.options.MISSING_TARGETS``: ``("mask",)`` keeps a folder dataset's images without a mask file).
    ``preprocessing`` lists how images are prepared for the model (``mtunet.options.PREPROCESSING``, e.g.
    ``("fov_crop", "ben_graham")`` for fundus photographs); the model's spec keeps it.
    ``ordinal_loss`` is how the heads of a dataset's ordinal targets (``columns.json`` kind ``ordinal``) learn:
    ``"softmax"`` (a class head, weighted cross-entropy) or ``"coral"`` (an ordinal head,
    ``mtunet.models.heads.ordinal``); either way they are evaluated as grades.
    """

    recipe: str | None = None
    architecture: str = "unet"
    encoder: str = "mobilenetv2"
    decoder: str | None = None
    skip: str | None = None
    weights: str | None = "imagenet"
    freeze_encoder: bool = False
    unfreeze_after: int | None = None
    dataset: str = "synthetic"
    data_dir: str | None = None
    image_size: int = 224
    batch_size: int = 32
    epochs: int = 50
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss_weights: tuple[float, float] | dict[str, float] = (5.0, 1.0)
    seg_loss: str = "bce_dice"
    dice: str = "image"
    class_weights: str = "balanced"
    label_smoothing: float = 0.0
    ordinal_loss: str = "softmax"
    task: str = "multi"
    skip_connections: bool = True
    augment: bool = True
    flip: str = "horizontal"
    shear: bool = True
    patience: int = 10
    reduce_lr_patience: int = 3
    seed: int = 0
    split_seed: int | None = None
    fold: int | None = None
    num_folds: int | None = None
    deterministic: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    precise_bn: bool = True
    ema_momentum: float = 0.0
    strategy: str = "auto"
    output_dir: str | None = None
    skip_bad_files: bool = False
    allow_missing: tuple[str, ...] = ()
    preprocessing: tuple[str, ...] = ()
    splits_file: str | None = None

    def __post_init__(self):
        if self.recipe is None:  # the fields' defaults are recipe mtunet's
            self.recipe = "mtunet"

    def validate(self):
        """Raises ``ConfigError`` naming the first invalid option or combination."""
        from mtunet.models import DECODERS, PRESETS, SKIPS, check_input_shape  # Keras: see the docstring

        check_input_shape((self.image_size, self.image_size, 3))
        check_allow_missing(self.allow_missing)
        check_preprocessing(self.preprocessing)
        if self.splits_file is not None and not pathlib.Path(self.splits_file).is_file():
            raise ConfigError(f"--splits-file {self.splits_file}: no such file; expected a splits.json (e.g. of a run)")
        if self.splits_file is not None and self.fold is not None:
            raise ConfigError("--splits-file gives the splits, --fold makes them: give one of them")
        weights = list(self.loss_weights.values()) if isinstance(self.loss_weights, dict) else self.loss_weights
        if len(weights) == 0 or min(weights) < 0 or sum(weights) == 0:
            raise ConfigError(f"--loss-weights {format_loss_weights(self.loss_weights)}: weights must be non-negative "
                              "and not all zero")
        choices = {"recipe": (self.recipe, RECIPES), "architecture": (self.architecture, PRESETS),
                   "task": (self.task, TASKS),
                   "seg_loss": (self.seg_loss, SEGMENTATION_LOSSES), "dice": (self.dice, DICE_VARIANTS),
                   "class_weights": (self.class_weights, CLASS_WEIGHTS), "strategy": (self.strategy, STRATEGIES),
                   "ordinal_loss": (self.ordinal_loss, ORDINAL_LOSSES),
                   "flip": (self.flip, FLIP_MODES), "optimizer": (self.optimizer, OPTIMIZERS)}
        for option, (value, valid) in choices.items():
            if value not in valid:
                raise ConfigError(f"--{option.replace('_', '-')} {value!r}: expected one of: {', '.join(valid)}")
        overrides = {"decoder": (self.decoder, DECODERS), "skip": (self.skip, SKIPS)}
        for option, (value, valid) in overrides.items():
            if value is not None and value not in valid:
                raise ConfigError(f"--{option.replace('_', '-')} {value!r}: expected one of: {', '.join(valid)}")
        if self.reduce_lr_patience < 0:
            raise ConfigError(f"--reduce-lr-patience {self.reduce_lr_patience}: expected 0 (constant learning rate) "
                              "or a positive number of epochs")
        if self.batch_size < 1 or self.epochs < 1 or self.learning_rate <= 0:
            raise ConfigError("--batch-size, --epochs and --learning-rate must be positive")
        if self.weight_decay < 0 or (self.weight_decay and self.optimizer != "adamw"):
            raise ConfigError(f"--weight-decay {self.weight_decay:g}: expected 0, or a positive value with "
                              f"--optimizer adamw (received --optimizer {self.optimizer})")
        if self.ema_momentum and self.optimizer != "adam":
            raise ConfigError(f"--ema-momentum averages the weights of --optimizer adam; received --optimizer "
                              f"{self.optimizer}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"--ema-momentum {self.ema_momentum}: expected a value in [0, 1) (0: no averaging)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing {self.label_smoothing}: expected a value in [0, 1)")
        if self.unfreeze_after is not None and not 0 < self.unfreeze_after < self.epochs:
            raise ConfigError(f"--unfreeze-after {self.unfreeze_after}: expected an epoch between 1 and "
                              f"{self.epochs - 1} (--epochs {self.epochs})")

    @classmethod
    def from_recipe(cls, architecture: str = "unet", recipe: str | None = None, **options) -> "TrainConfig":
        """The options of ``recipe`` (default: preset ``architecture``'s, ``mtunet.PRESETS[architecture].recipe``)
        with ``options`` in place of the recipe's; ``ConfigError`` for an unknown architecture, recipe or option."""
        from mtunet.models import PRESETS  # Keras: see the module docstring

        if architecture not in PRESETS:
            raise ConfigError(f"--architecture {architecture!r}: expected one of: {', '.join(PRESETS)}")
        recipe = recipe or PRESETS[architecture].recipe
        if recipe not in RECIPES:
            raise ConfigError(f"--recipe {recipe!r}: expected one of: {', '.join(RECIPES)}")
        return cls.from_options({**RECIPES[recipe].options, **options, "architecture": architecture,
                                 "recipe": recipe})

    @classmethod
    def from_options(cls, options: dict) -> "TrainConfig":
        """A config from options as stored in JSON (``loss_weights`` may be a list); ``ConfigError`` names unknown
        options."""
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(unknown)}; expected options of TrainConfig")
        options = dict(options)
        for name in ("loss_weights", "allow_missing", "preprocessing"):
            if isinstance(options.get(name), list):
                options[name] = tuple(options[name])
        return cls(**options)

    def default_output_dir(self) -> pathlib.Path:
        dataset = self.dataset.replace("/", "-")  # a builder config, e.g. isic2018/task1_512
        return pathlib.Path("runs") / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{self.encoder}-{dataset}"


def format_loss_weights(loss_weights) -> str:
    """``loss_weights`` as ``--loss-weights`` takes them: ``SEG:CLS`` or ``name=weight,...``."""
    if isinstance(loss_weights, dict):
        return ",".join(f"{name}={weight:g}" for name, weight in loss_weights.items())
    return ":".join(f"{weight:g}" for weight in loss_weights)


def load_config(run_dir) -> TrainConfig:
    """Reads the options of the run in ``run_dir``."""
    path = pathlib.Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG_FILE} not found")
    return TrainConfig.from_options(json.loads(path.read_text())["options"])
