"""Errors a user can cause and fix: the CLI shows their message on one line, without a traceback."""


class MtunetError(Exception):
    """Base class of every error that is the user's input, not a bug in mtunet."""


class ConfigError(MtunetError, ValueError):
    """An option or argument that is invalid or inconsistent (unknown encoder, image size, ...)."""


class DataError(MtunetError, ValueError):
    """A dataset that cannot be read as asked: a corrupt image, a missing mask or label, ..."""


class WeightsUnavailableError(MtunetError, RuntimeError):
    """Pretrained weights that cannot be had: no network, or no such weights for the encoder."""


class ExportError(MtunetError, RuntimeError):
    """An exported model that does not reproduce the Keras model's outputs, or cannot be reloaded."""
