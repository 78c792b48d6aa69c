"""TensorFlow started without its C++ start-up lines on the terminal, for the CLI.

TensorFlow's native code writes "All log messages before absl::InitializeLog() ...", "oneDNN custom operations are
on ...", "Could not find cuda drivers ..." and "failed call to cuInit" straight to file descriptor 2 while it is
imported and looks for devices, before ``TF_CPP_MIN_LOG_LEVEL`` or Python's logging can filter them (tensorflow
issue 100442). So the import and the device search run with descriptor 2 pointed at a temporary file, which is
replayed if they fail: nothing is lost, and a failed import still shows why.
"""

import contextlib
import os
import sys
import tempfile

# TF_CPP_MIN_LOG_LEVEL 3: the C++ log shows fatal errors only (a Python exception reports the others)
QUIET_LOG_LEVEL = "3"


@contextlib.contextmanager
def _standard_error_captured():
    """Points descriptor 2 at a temporary file inside the block; replays the file on stderr if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def start_tensorflow(verbose: bool = False) -> None:
    """Imports TensorFlow and finds its devices, quietly unless ``verbose``; a ``TF_CPP_MIN_LOG_LEVEL`` the user set
    is kept. Does nothing once TensorFlow is imported."""
    if "tensorflow" in sys.modules:
        return
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LOG_LEVEL)
    with contextlib.nullcontext() if verbose else _standard_error_captured():
        import tensorflow as tf

        tf.config.list_physical_devices()
