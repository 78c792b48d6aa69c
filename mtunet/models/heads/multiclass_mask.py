"""The softmax lesion mask: background and K lesion classes per pixel (e.g. lesion core and rim, lesion types)."""

import keras
import numpy as np
from keras import ops

from mtunet.errors import ConfigError
from mtunet.models.heads.base import HEADS, Head, LossSettings
from mtunet.models.losses import MultiClassSegmentationLoss
from mtunet.models.metrics import MeanClassDice, MeanClassIoU


@HEADS.register("multiclass_mask")
class MultiClassMaskHead(Head):
    """3x3 convolution to K + 1 logits per pixel (``{name}_logits``) -> softmax (``{name}``), ``(batch, H, W, K + 1)``;
    channel 0 is the background, channel c the class of mask value c.

    Args:
        name: output name (``"mask"``, the data's mask of class values 0..K).
        mask_classes: the names of the K >= 2 lesion classes, in the order of their mask values 1..K.
    """

    type, target, loss_role, needs_decoder, spatial = "multiclass_mask", "mask", "segmentation", True, True
    description = "softmax mask over background and K lesion classes; cross-entropy, multi-class soft Dice or both"

    def __init__(self, name="mask", *, mask_classes):
        super().__init__(name)
        if len(mask_classes) < 2:
            raise ConfigError(f"a multi-class mask needs at least 2 lesion classes; received {list(mask_classes)} "
                              "(one class is the binary mask)")
        self.mask_classes = tuple(str(name) for name in mask_classes)

    @property
    def num_channels(self) -> int:
        return len(self.mask_classes) + 1

    def apply(self, features, decoded):
        logits = keras.layers.Conv2D(self.num_channels, 3, padding="same", name=self.logits_layer)(decoded)
        return keras.layers.Activation("softmax", dtype="float32", name=self.name)(logits)

    def loss(self, settings: LossSettings):
        return MultiClassSegmentationLoss(settings.seg_loss, settings.dice)

    def metrics(self, prefix):
        return [MeanClassDice(name=f"{prefix}dice"), MeanClassIoU(name=f"{prefix}iou")]

    def serving_outputs(self, output):
        return {f"{self.name}_probabilities": output, f"{self.name}_class_map": ops.argmax(output, axis=-1)}

    def predict_numpy(self, output, threshold=0.5):
        return np.asarray(output).argmax(axis=-1).astype(np.uint8)

    def get_config(self):
        return {"type": self.type, "name": self.name, "mask_classes": list(self.mask_classes)}
