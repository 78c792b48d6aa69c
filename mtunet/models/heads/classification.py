"""Task heads. Each ends in a float32 activation layer named after its output (``label``, ``mask``), preceded by
a ``*_logits`` layer that Grad-CAM can differentiate."""

import keras


def apply_classification_head(bottleneck, num_classes, dropout):
    """Global average pooling -> dropout -> dense logits (``label_logits``) -> softmax (``label``)."""
    x = keras.layers.GlobalAveragePooling2D(name="label_pool")(bottleneck)
    x = keras.layers.Dropout(dropout, name="label_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="label_logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="label")(logits)


def apply_segmentation_head(decoded):
    """3x3 convolution to one logit per pixel (``mask_logits``) -> sigmoid (``mask``)."""
    logits = keras.layers.Conv2D(1, 3, padding="same", name="mask_logits")(decoded)
    return keras.layers.Activation("sigmoid", dtype="float32", name="mask")(logits)
