"""The multi-label lesion mask: one sigmoid probability per pixel and lesion type, for lesion types that overlap
(e.g. the microaneurysms, haemorrhages and exudates of a fundus photograph)."""

import keras
import numpy as np

from mtunet.errors import ConfigError
from mtunet.models.heads.base import HEADS, Head, LossSettings
from mtunet.models.losses import MultiLabelSegmentationLoss
from mtunet.models.metrics import MeanLabelDice, MeanLabelIoU


@HEADS.register("multilabel_mask")
class MultiLabelMaskHead(Head):
    """3x3 convolution to L logits per pixel (``{name}_logits``) -> sigmoid (``{name}``), ``(batch, H, W, L)``;
    channel ``l`` is the lesion type ``mask_classes[l]``.

    Args:
        name: output name (``"mask"``, the data's multi-label mask).
        mask_classes: the names of the L >= 1 lesion types, in the order of the mask's channels.
    """

    type, target, loss_role, needs_decoder, spatial = "multilabel_mask", "mask", "segmentation", True, True
    description = "multi-label mask, one sigmoid channel per lesion type; BCE, soft Dice or both per channel"

    def __init__(self, name="mask", *, mask_classes):
        super().__init__(name)
        if not mask_classes:
            raise ConfigError("a multi-label mask needs at least 1 lesion type; received none")
        self.mask_classes = tuple(str(name) for name in mask_classes)

    def apply(self, features, decoded):
        logits = keras.layers.Conv2D(len(self.mask_classes), 3, padding="same", name=self.logits_layer)(decoded)
        return keras.layers.Activation("sigmoid", dtype="float32", name=self.name)(logits)

    def loss(self, settings: LossSettings):
        return MultiLabelSegmentationLoss(settings.seg_loss, settings.dice)

    def metrics(self, prefix):
        return [MeanLabelDice(name=f"{prefix}dice"), MeanLabelIoU(name=f"{prefix}iou")]

    def serving_outputs(self, output):
        return {f"{self.name}_probabilities": output}

    def predict_numpy(self, output, threshold=0.5):
        return np.asarray(output) > threshold

    def get_config(self):
        return {"type": self.type, "name": self.name, "mask_classes": list(self.mask_classes)}
