"""Shared fixtures: quiet TensorFlow, a fresh Keras session per test module."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def clear_keras_session():
    """Frees the graphs of the previous module's models, so memory does not grow over the suite."""
    keras.backend.clear_session()
    yield
