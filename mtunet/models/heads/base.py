"""What a head is: one output of the model with its layers, loss, training metrics, post-processing, serving outputs
and the layer Grad-CAM explains by default. Training, evaluation, export, serving, predict and Grad-CAM read these
from the model's heads instead of naming its layers."""

import abc
import dataclasses
from typing import ClassVar

import numpy as np

from mtunet.errors import ConfigError
from mtunet.models.registry import Registry

HEADS = Registry("head type")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The training options heads build their losses from.

    Attributes:
        seg_loss: a mask loss, one of ``mtunet.options.SEGMENTATION_LOSSES``.
        dice: what its Dice term is computed over, one of ``mtunet.options.DICE_VARIANTS``.
        class_weights: ``{classification head name: one weight per class}``; a head not in it is unweighted.
        label_smoothing: in [0, 1), for the class head.
    """

    seg_loss: str = "bce"
    dice: str = "image"
    class_weights: dict = dataclasses.field(default_factory=dict)
    label_smoothing: float = 0.0


class Head(abc.ABC):
    """One output of the model, named ``name`` (its output key, and the prefix of its layers).

    Class attributes of each head type:
        type: its registry name.
        target: the key of the data pipeline's targets it learns from (``"mask"``; the heads on pooled features
            learn from the targets keyed by their name).
        loss_role: ``"segmentation"``, ``"classification"`` or ``"regression"``; ``--loss-weights SEG:CLS`` weighs
            the first two by role.
        needs_decoder: whether it reads the decoder's output (else the encoder's pyramid).
        spatial: whether its output is a map at the input's resolution (serving maps it back to the image's size).
        description: one line for ``mtunet architectures``.
    """

    type: ClassVar[str]
    description: ClassVar[str]
    target: ClassVar[str]
    loss_role: ClassVar[str]
    needs_decoder: ClassVar[bool]
    spatial: ClassVar[bool]

    def __init__(self, name: str):
        self.name = name

    @property
    def logits_layer(self) -> str:
        """The layer before the output's activation, which Grad-CAM differentiates."""
        return f"{self.name}_logits"

    @abc.abstractmethod
    def apply(self, features: dict, decoded):
        """The head's output tensor from the P1..P5 ``features`` and the decoder's output (None without a decoder);
        it ends in a float32 activation layer named ``name`` after the ``{name}_logits`` layer."""

    @abc.abstractmethod
    def loss(self, settings: LossSettings):
        """The Keras loss of this head's output."""

    @abc.abstractmethod
    def metrics(self, prefix: str) -> list:
        """The Keras metrics training follows, named with ``prefix`` (e.g. ``"val_"`` is added by Keras)."""

    @abc.abstractmethod
    def serving_outputs(self, output) -> dict:
        """``{name: tensor}`` the serving signatures return for this head (``keras.ops`` on the model's output,
        after a spatial output has been mapped back to the image's size)."""

    @abc.abstractmethod
    def predict_numpy(self, output: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """The head's decision from its numpy output: class indices, or a mask / class map per pixel."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """The head's constructor arguments with its ``type``: ``build_head(get_config())`` rebuilds it."""

    def class_index_outputs(self) -> dict:
        """``{serving output of class indices: output of their names}`` (for heads whose classes have names)."""
        return {}


def build_head(config: dict) -> Head:
    """A head from its config (``{"type": ..., "name": ..., **options}``); ``ConfigError`` for an unknown type or
    options the type does not take or needs."""
    config = dict(config)
    head_type = HEADS.get(config.pop("type"))
    try:
        return head_type(**config)
    except TypeError as error:  # a missing or unexpected keyword: the message names it after the method's name
        reason = str(error).split("() ", 1)[-1]
        raise ConfigError(f"head {config.get('name')!r} ({head_type.type}): {reason}") from None
