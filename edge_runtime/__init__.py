"""twinspect edge runtime: what runs on the line PC (numpy, OpenCV, onnxruntime — never TensorFlow).

Preprocessing, the sidecar schema, scoring and data loading live here once; `train` and `export`
import them so that the line judges a part exactly as training did.
"""

__version__ = "0.1.0"
