"""Evaluation: metrics from predictions (``metrics``), evaluating a run directory (``run``), the HTML report, its
plots and the statistics of experiments. ``mtunet.evaluate_run`` and ``mtunet.metrics_from_predictions`` are the
public API."""
