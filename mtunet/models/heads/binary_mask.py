"""The sigmoid lesion mask: one probability per pixel from the decoder's output."""

import keras
import numpy as np

from mtunet.models.heads.base import HEADS, Head, LossSettings
from mtunet.models.losses import SegmentationLoss
from mtunet.models.metrics import MeanDice, MeanIoU


@HEADS.register("binary_mask")
class BinaryMaskHead(Head):
    """3x3 convolution to one logit per pixel (``{name}_logits``) -> sigmoid (``{name}``), ``(batch, H, W, 1)``.

    Args:
        name: output name (``"mask"``, the data's mask).
    """

    type, target, loss_role, needs_decoder, spatial = "binary_mask", "mask", "segmentation", True, True
    description = "sigmoid lesion mask, one channel; BCE, soft Dice or both (--seg-loss)"

    def __init__(self, name="mask"):
        super().__init__(name)

    def apply(self, features, decoded):
        logits = keras.layers.Conv2D(1, 3, padding="same", name=self.logits_layer)(decoded)
        return keras.layers.Activation("sigmoid", dtype="float32", name=self.name)(logits)

    def loss(self, settings: LossSettings):
        return SegmentationLoss(settings.seg_loss, settings.dice)

    def metrics(self, prefix):
        return [MeanDice(name=f"{prefix}dice"), MeanIoU(name=f"{prefix}iou")]

    def serving_outputs(self, output):
        return {f"{self.name}_probabilities": output}

    def predict_numpy(self, output, threshold=0.5):
        return np.asarray(output)[..., 0] > threshold

    def get_config(self):
        return {"type": self.type, "name": self.name}
