"""twinspect training: the twin network, pairs, reference vector and calibration (TensorFlow).

Nothing here is imported by the edge runtime. `require_keras()` turns a missing TensorFlow into
one line that names the extra to install.
"""

from __future__ import annotations

import contextlib
import os
import sys

from edge_runtime.errors import MissingExtra


@contextlib.contextmanager
def _stderr_silenced():
    """TensorFlow 2.21 prints oneDNN/CPU-feature notices from C++ static initialisers, before
    TF_CPP_MIN_LOG_LEVEL is read; they would drown our one-line messages. Set TWINSPECT_TF_LOGS=1
    to see them. Python exceptions are unaffected."""
    if os.environ.get("TWINSPECT_TF_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def require_keras():
    """Import Keras on the TensorFlow backend, quietly, or say which extra is missing."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with _stderr_silenced():
            import keras
            import tensorflow  # noqa: F401
    except ImportError:
        raise MissingExtra("training", "train") from None
    return keras
