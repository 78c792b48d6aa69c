"""The choices of mtunet's options, in one place and free of TensorFlow, so that the library and the command line
(which must answer ``--help`` without importing TensorFlow) share them, and how a message spells an option."""

import contextlib

from mtunet.errors import ConfigError

TASKS = ("multi", "segmentation", "classification")
SEGMENTATION_LOSSES = ("bce", "dice", "bce_dice")
DICE_VARIANTS = ("image", "image_scaled", "batch", "lesion")
REGRESSION_LOSSES = ("mse", "huber")
ORDINAL_LOSSES = ("softmax", "coral")  # of the heads of ordinal targets: a class head, or an ordinal (CORAL) head
CLASS_WEIGHTS = ("balanced", "none")
FLIP_MODES = ("horizontal_and_vertical", "horizontal", "vertical", "none")
OPTIMIZERS = ("adam", "adamw")
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
EVALUATION_SPLITS = ("train", "validation", "test", "all")
EMPTY_MASK_RULES = ("one", "skip")
EXPORT_FORMATS = ("saved_model", "tflite")
# how images are prepared for the model (--preprocessing): fov_crop cuts them to the field of view of a fundus
# photograph before resizing (``mtunet.data.images.field_of_view_box``); ben_graham is Ben Graham's local colour
# normalisation, a layer of the model (``mtunet.models.layers.BenGrahamNormalisation``)
PREPROCESSING = ("fov_crop", "ben_graham")
# targets a folder dataset may lack for some images (--allow-missing): such an image trains only its other losses
MISSING_TARGETS = ("mask", "label")


def _some_of(option: str, values, choices, what: str) -> tuple[str, ...]:
    """``values`` of ``option`` as a tuple of some of ``choices`` (each a ``what``); ``ConfigError`` naming unknown
    ones."""
    values = tuple(values or ())
    unknown = [name for name in values if name not in choices]
    if unknown:
        raise ConfigError(f"{spell(option, ','.join(values))}: unknown {what}(s) {', '.join(unknown)}; expected some "
                          f"of: {', '.join(choices)}")
    return values


def check_preprocessing(preprocessing) -> tuple[str, ...]:
    """``preprocessing`` as a tuple of ``PREPROCESSING`` in their order; ``ConfigError`` naming an unknown step."""
    preprocessing = _some_of("preprocessing", preprocessing, PREPROCESSING, "step")
    return tuple(name for name in PREPROCESSING if name in preprocessing)


def check_allow_missing(allow_missing) -> tuple[str, ...]:
    """``allow_missing`` as a tuple of ``MISSING_TARGETS``; ``ConfigError`` naming an unknown target."""
    return _some_of("allow_missing", allow_missing, MISSING_TARGETS, "target")


# How messages spell an option: "python" (``skip_bad_files=True``), or "cli" (``--skip-bad-files``) while a
# command runs, so that each user reads the spelling they type.
_spelling = {"style": "python"}


@contextlib.contextmanager
def command_line_spelling():
    """Inside the block, ``spell`` gives command-line options (the CLI runs each command in it)."""
    previous, _spelling["style"] = _spelling["style"], "cli"
    try:
        yield
    finally:
        _spelling["style"] = previous


def spell(name: str, value) -> str:
    """Option ``name`` set to ``value`` as the user writes it: ``weights=None`` in Python, ``--weights none`` on the
    command line (a flag as ``--skip-bad-files``)."""
    if _spelling["style"] == "python":
        return f"{name}={value!r}"
    flag = "--" + name.replace("_", "-")
    if value is True:
        return flag
    return f"{flag} {'none' if value is None else value}"
