"""The maps a decoder declares worth showing beside Grad-CAM (``mtunet.models.explained_layers``), e.g. the attention
coefficients of the Attention U-Net's gates, read from the model and resized to the image.

Examples::

    maps = DecoderMaps(model)          # maps.layers: [] for a decoder without such maps
    maps(images)["decoder_stage4_gate_attention"].values   # (N, H, W), the coefficients in [0, 1]
"""

import dataclasses

import keras
import numpy as np

from mtunet.models import explained_layers


@dataclasses.dataclass
class DecoderMap:
    """One layer's map for a batch: ``values`` ``(N, H, W)`` at the image's size, ``stride`` its own resolution."""

    values: np.ndarray
    stride: int


class DecoderMaps:
    """Reads the decoder's explained layers of ``model`` (one channel each) in one forward pass per batch."""

    def __init__(self, model):
        self.layers = explained_layers(model)
        self._model = (keras.Model(model.input, [model.get_layer(name).output for name in self.layers])
                       if self.layers else None)

    def __call__(self, images) -> dict[str, DecoderMap]:
        """``{layer name: DecoderMap}`` for raw 0-255 pixels ``(N, H, W, C)``; empty without explained layers."""
        if self._model is None:
            return {}
        images = np.asarray(images, np.float32)
        outputs = self._model(images, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        maps = {}
        for name, output in zip(self.layers, outputs):
            resized = keras.ops.image.resize(keras.ops.cast(output[..., :1], "float32"), images.shape[1:3],
                                             interpolation="bilinear")
            maps[name] = DecoderMap(keras.ops.convert_to_numpy(resized)[..., 0], images.shape[1] // output.shape[1])
        return maps
