"""The reference notebook's way of judging parts, timed: `embedding_model.predict` on one image
at a time. Run by `twinspect bench` as a subprocess (`python -m train.keras_bench ...`) so the
edge runtime never imports TensorFlow in-process; prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.keras_bench")
    p.add_argument("--run", required=True, type=Path, help="training run folder (embedding.keras)")
    p.add_argument("--patches", required=True, type=Path, help=".npy of uint8 N×H×W patches")
    p.add_argument("--n", type=int, default=200, help="images to time (default 200)")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)

    from edge_runtime.preprocess import to_tensor
    from train.model import load_model
    from train.run_folder import read_reference

    spec = read_reference(args.run).input
    model = load_model(args.run / "embedding.keras")
    patches = np.load(args.patches)
    times = []
    for i in range(args.warmup + args.n):
        x = to_tensor(patches[i % len(patches)], spec)
        t0 = time.perf_counter_ns()
        model.predict(x, verbose=0)  # the notebook's call, one image at a time
        if i >= args.warmup:
            times.append((time.perf_counter_ns() - t0) / 1000.0)
    t = np.asarray(times)
    print(
        json.dumps(
            {
                "n": len(t),
                "p50_us": float(np.percentile(t, 50)),
                "p99_us": float(np.percentile(t, 99)),
                "mean_us": float(t.mean()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
