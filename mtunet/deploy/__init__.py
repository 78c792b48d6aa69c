"""Deployment: serving signatures (``serving``), the self-checked SavedModel / TFLite export (``export``, with
BatchNorm folding in ``folding``) and prediction on image files (``predict``)."""
