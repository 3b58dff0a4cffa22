"""twinspect training: the twin network, pairs, reference vector and calibration (TensorFlow).

Nothing here is imported by the edge runtime. `require_keras()` turns a missing TensorFlow into
one line that names the extra to install.
"""

from __future__ import annotations

import os

from edge_runtime.errors import MissingExtra


def require_keras():
    """Import Keras on the TensorFlow backend, quietly, or say which extra is missing."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
        import tensorflow  # noqa: F401
    except ImportError:
        raise MissingExtra("training", "train") from None
    return keras
