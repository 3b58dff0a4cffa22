"""The line PC never loads the training stack: a full inspection and evaluation in a fresh
interpreter leave TensorFlow, Keras, tf2onnx, train and export out of sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "train", "export")

CHILD = """
import json, sys
from edge_runtime.cli import main
codes = [
    main(["run", "--model", sys.argv[1], "--source", sys.argv[2], "--out", sys.argv[3]]),
    main(["eval", "--model", sys.argv[1], "--data", sys.argv[4]]),
    main(["run", "--model", sys.argv[1], "--source", sys.argv[2], "--batch", "4",
          "--out", sys.argv[3], "--overwrite"]),
]
roots = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"codes": codes, "modules": roots}))
"""


def test_inspection_never_imports_the_training_stack(untrained_model_dir, tmp_path):
    frames = tmp_path / "frames"
    data = tmp_path / "data"
    for d in (frames, data / "0", data / "1"):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        img = np.clip(rng.normal(90, 20, (26, 36)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(frames / f"{i:03d}.png"), img)
        cv2.imwrite(str(data / str(i % 2) / f"{i:03d}.png"), img)
    out = tmp_path / "r.jsonl"
    argv = [str(untrained_model_dir), str(frames), str(out), str(data)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0]
    assert len(out.read_text().splitlines()) == 6
    loaded = set(result["modules"])
    assert {"onnxruntime", "cv2", "numpy", "edge_runtime"} <= loaded
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))
