"""The ``keras.applications`` encoders: VGG16, MobileNetV2, DenseNet-121/161/169/201, EfficientNet-B0..B7."""

import dataclasses
import urllib.error
from collections.abc import Callable

import keras

from mtunet.errors import WeightsUnavailableError
from mtunet.models.encoders.base import ENCODERS, EncoderSpec
from mtunet.options import spell


def _densenet161(**kwargs):
    # Keras exports DenseNet121/169/201 only, but its DenseNet constructor takes any dense-block configuration;
    # 6-12-36-24 is DenseNet-161's (with Keras's growth rate 32 rather than the original 48).
    from keras.src.applications.densenet import DenseNet

    return DenseNet(blocks=[6, 12, 36, 24], name="densenet161", **kwargs)


def _is_download_failure(error: Exception) -> bool:
    # keras.utils.get_file turns HTTP and URL errors into a bare Exception("URL fetch failure on ...").
    return type(error) is Exception or isinstance(error, (OSError, urllib.error.URLError))


@dataclasses.dataclass(frozen=True)
class ApplicationEncoder(EncoderSpec):
    """An encoder from ``keras.applications``.

    Attributes:
        constructor: ``keras.applications`` function taking ``include_top``, ``weights``, ``input_shape``.
        pyramid_layers: names of the layers whose outputs are P1..P5 (strides 2, 4, 8, 16, 32).
    """

    constructor: Callable[..., keras.Model] = None
    pyramid_layers: tuple[str, str, str, str, str] = ()

    def build_backbone(self, input_shape, weights):
        """The ``keras.applications`` model without its top; its weights from ImageNet, a file, or random."""
        try:
            backbone = self.constructor(include_top=False, weights=weights, input_shape=input_shape)
        except Exception as error:
            if weights == "imagenet" and _is_download_failure(error):
                raise WeightsUnavailableError(
                    f"could not download the ImageNet weights of {self.name!r} ({error}); "
                    f"train from scratch with {spell('weights', None)} or pass the path of a local weights file"
                ) from error
            raise
        return backbone, self.pyramid_layers


_VGG16_LAYERS = ("block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")
# The block outputs (16, 24, 32, 96 channels), as segmentation_models_pytorch takes them, rather than the wider
# expanded activations (96, 144, 192, 576) of Keras's pix2pix tutorial: the decoder then does a quarter less arithmetic.
_MOBILENETV2_LAYERS = ("expanded_conv_project_BN", "block_2_add", "block_5_add", "block_12_add", "out_relu")
_DENSENET_LAYERS = ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu")
_EFFICIENTNET_LAYERS = (
    "block2a_expand_activation", "block3a_expand_activation", "block4a_expand_activation",
    "block6a_expand_activation", "top_activation",
)

for _spec in [
    ApplicationEncoder("vgg16", "caffe", needs_center_block=True, constructor=keras.applications.VGG16,
                       pyramid_layers=_VGG16_LAYERS),
    ApplicationEncoder("mobilenetv2", "tf", constructor=keras.applications.MobileNetV2,
                       pyramid_layers=_MOBILENETV2_LAYERS),
    ApplicationEncoder("densenet121", "torch", constructor=keras.applications.DenseNet121,
                       pyramid_layers=_DENSENET_LAYERS),
    ApplicationEncoder("densenet169", "torch", constructor=keras.applications.DenseNet169,
                       pyramid_layers=_DENSENET_LAYERS),
    ApplicationEncoder("densenet201", "torch", constructor=keras.applications.DenseNet201,
                       pyramid_layers=_DENSENET_LAYERS),
    ApplicationEncoder("densenet161", "torch", imagenet_weights=False, constructor=_densenet161,
                       pyramid_layers=_DENSENET_LAYERS),
    *[ApplicationEncoder(f"efficientnetb{i}", "none", constructor=getattr(keras.applications, f"EfficientNetB{i}"),
                         pyramid_layers=_EFFICIENTNET_LAYERS) for i in range(8)],
]:
    ENCODERS.register(_spec.name, _spec)
