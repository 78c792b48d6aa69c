"""TFDS builder of the synthetic dataset (``tfds.load("mtunet_synthetic")`` once this module is imported).

It generates everything locally, so it works offline. Its features are those every mtunet TFDS builder provides
(see ``mtunet.data.tfds_source``).
"""

import tensorflow_datasets as tfds

from mtunet.data import synthetic


class MtunetSynthetic(tfds.core.GeneratorBasedBuilder):
    """Synthetic ultrasound-like images: normal / benign / malignant, with lesion masks and patient ids."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "192 images of 96 patients, 128x128 grayscale, 3 classes."}

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
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for example in synthetic.synthetic_examples():
            yield example["id"], example
