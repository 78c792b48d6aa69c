"""The choices of mtunet's options, in one place and free of TensorFlow, so that the library and the command line
(which must answer ``--help`` without importing TensorFlow) share them."""

TASKS = ("multi", "segmentation", "classification")
SEGMENTATION_LOSSES = ("bce", "dice", "bce_dice")
CLASS_WEIGHTS = ("balanced", "none")
FLIP_MODES = ("horizontal_and_vertical", "horizontal", "vertical", "none")
OPTIMIZERS = ("adam", "adamw")
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
EVALUATION_SPLITS = ("train", "validation", "test", "all")
EMPTY_MASK_RULES = ("one", "skip")
EXPORT_FORMATS = ("saved_model", "tflite")
