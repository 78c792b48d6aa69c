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
    "train": "mtunet.training.loop",
    "TrainConfig": "mtunet.training.config",
    "RECIPES": "mtunet.training.recipes",
    "Run": "mtunet.training.loop",
    "load_dataset": "mtunet.data",
    "evaluate_run": "mtunet.evaluation.run",
    "EvaluationContext": "mtunet.evaluation.run",
    "ReportSection": "mtunet.evaluation.report",
    "metrics_from_predictions": "mtunet.evaluation.metrics",
    "run_experiment": "mtunet.experiment",
    "Experiment": "mtunet.experiment",
    "Variant": "mtunet.experiment",
    "task_variants": "mtunet.experiment",
    "paired_comparison": "mtunet.evaluation.stats",
    "prepare_dataset": "mtunet.data",
    "export_model": "mtunet.deploy.export",
    "ExportResult": "mtunet.deploy.export",
    "load_trained_model": "mtunet.deploy.serving",
    "build_serving_functions": "mtunet.deploy.serving",
    "load_predictor": "mtunet.deploy.predict",
    "predict_files": "mtunet.deploy.predict",
    "GradCam": "mtunet.explain.gradcam",
    "localisation_scores": "mtunet.explain.gradcam",
    "gradcam_section": "mtunet.explain.gradcam",
    "prepare_gallery": "mtunet.explain.gallery",
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
