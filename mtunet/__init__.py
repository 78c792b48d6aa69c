"""mtunet: multi-task U-Nets (lesion mask + diagnosis) for medical images.

The public API is imported lazily, so ``import mtunet`` (and the ``mtunet`` command's ``--help``) does not pay
for importing TensorFlow until a model or dataset is actually used.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC_API = {
    "build_model": "mtunet.models",
    "build_model_from_spec": "mtunet.models",
    "make_spec": "mtunet.models",
    "ModelSpec": "mtunet.models",
    "load_model": "mtunet.models",
    "PRESETS": "mtunet.models",
    "ENCODERS": "mtunet.models",
    "DECODERS": "mtunet.models",
    "SKIPS": "mtunet.models",
    "HEADS": "mtunet.models",
    "EncoderSpec": "mtunet.models",
    "get_encoder": "mtunet.models",
    "encoder_table": "mtunet.models.catalog",
    "architecture_table": "mtunet.models.catalog",
    "train": "mtunet.training",
    "TrainConfig": "mtunet.training",
    "Run": "mtunet.training",
    "load_dataset": "mtunet.data",
    "evaluate_run": "mtunet.run_evaluation",
    "EvaluationContext": "mtunet.run_evaluation",
    "ReportSection": "mtunet.report",
    "metrics_from_predictions": "mtunet.evaluation",
    "run_experiment": "mtunet.experiment",
    "Experiment": "mtunet.experiment",
    "Variant": "mtunet.experiment",
    "task_variants": "mtunet.experiment",
    "paired_comparison": "mtunet.stats",
    "prepare_dataset": "mtunet.data",
    "export_model": "mtunet.export",
    "ExportResult": "mtunet.export",
    "load_trained_model": "mtunet.serving",
    "build_serving_functions": "mtunet.serving",
    "load_predictor": "mtunet.predict",
    "predict_files": "mtunet.predict",
    "GradCam": "mtunet.gradcam",
    "localisation_scores": "mtunet.gradcam",
    "gradcam_section": "mtunet.gradcam",
    "prepare_gallery": "mtunet.gradcam_gallery",
    "run_demo": "mtunet.demo",
    "DemoResult": "mtunet.demo",
    "MtunetError": "mtunet.errors",
    "ConfigError": "mtunet.errors",
    "DataError": "mtunet.errors",
    "WeightsUnavailableError": "mtunet.errors",
    "ExportError": "mtunet.errors",
}

__all__ = sorted(_PUBLIC_API) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC_API:
        return getattr(importlib.import_module(_PUBLIC_API[name]), name)
    raise AttributeError(f"module 'mtunet' has no attribute {name!r}")


def __dir__():
    return __all__
