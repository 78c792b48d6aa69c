"""Explanations: Grad-CAM of any head (``gradcam``) and the HTML gallery of a run's images (``gallery``)."""
