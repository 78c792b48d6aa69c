"""TFDS builder of the synthetic dataset (``tfds.load("mtunet_synthetic")`` once this module is imported).

It generates everything locally, so it works offline. Its features are those every mtunet TFDS builder provides
(see ``mtunet.data.tfds_source``); examples are stored in id order.
"""

import tensorflow_datasets as tfds

from mtunet.data import synthetic


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

    def _info(self) -> tfds.core.DatasetInfo:
        size = synthetic.NATIVE_SIZE
        return tfds.core.DatasetInfo(
            builder=self,
            description=synthetic.__doc__,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "patient": tfds.features.Text(),
                "image": tfds.features.Image(shape=(size, size, 1)),
                "mask": tfds.features.Image(shape=(size, size, 1)),
                "label": tfds.features.ClassLabel(names=synthetic.CLASS_NAMES),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for example in synthetic.synthetic_examples():
            yield example["id"], example
