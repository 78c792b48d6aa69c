"""TFDS builders of the synthetic datasets (``tfds.load("mtunet_synthetic")`` and
``tfds.load("mtunet_synthetic_multiclass")`` once this module is imported).

They generate everything locally, so they work offline. Their features are those every mtunet TFDS builder provides
(see ``mtunet.data.tfds_source``); examples are stored in id order.
"""

import tensorflow_datasets as tfds

from mtunet.data import synthetic
from mtunet.data.images import BINARY_MASK_CLASSES


def _features() -> tfds.features.FeaturesDict:
    size = synthetic.NATIVE_SIZE
    return tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "patient": tfds.features.Text(),
        "image": tfds.features.Image(shape=(size, size, 1)),
        "mask": tfds.features.Image(shape=(size, size, 1)),
        "label": tfds.features.ClassLabel(names=synthetic.CLASS_NAMES),
    })


class MtunetSynthetic(tfds.core.GeneratorBasedBuilder):
    """Synthetic breast-ultrasound-like images: cyst / fibroadenoma / carcinoma, with lesion masks and patient ids."""

    VERSION = tfds.core.Version("2.1.0")
    RELEASE_NOTES = {
        "1.0.0": "192 images of 96 patients, 128x128 grayscale, classes normal / benign / malignant.",
        "2.0.0": "1400 images of 700 patients, 128x128 grayscale, a lesion in every image, classes cyst / "
                 "fibroadenoma / carcinoma differing in shape, margin, texture and posterior features; random size "
                 "(some small), contrast (some faint), position and gain; stored in id order.",
        "2.1.0": "Same size and classes; class traits overlap less at low resolution: aspect ratio ranges, more "
                 "anechoic cysts with stronger enhancement below, every carcinoma spiculated with a halo and a "
                 "deeper shadow.",
    }
    MASK_CLASSES = BINARY_MASK_CLASSES  # masks 0/255

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=synthetic.__doc__, features=_features(),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for example in synthetic.synthetic_examples():
            yield example["id"], example


class MtunetSyntheticMulticlass(MtunetSynthetic):
    """The synthetic dataset's images with a brighter lesion core, masks of 0 background, 1 rim, 2 core."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "The ids, patients, classes, outlines and tissue of mtunet_synthetic 2.1.0; the lesion's core (deeper "
                 "than 35% of its greatest depth) drawn 2.2 times brighter than its rim; masks 0 background, 1 rim, "
                 "2 core.",
    }
    MASK_CLASSES = synthetic.RIM_AND_CORE_CLASSES

    def _info(self) -> tfds.core.DatasetInfo:
        description = (f"{synthetic.__doc__}\nEach lesion's core is drawn {synthetic.CORE_BRIGHTNESS} times brighter "
                       "than its rim; masks hold 0 background, 1 rim, 2 core.\n")
        return tfds.core.DatasetInfo(builder=self, description=description, features=_features(),
                                     disable_shuffling=True)

    def _generate_examples(self):
        for example in synthetic.synthetic_examples(rim_and_core=True):
            yield example["id"], example
