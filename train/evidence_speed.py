"""Speed and footprint: `twinspect bench` on the exported models, the single-thread GEMM floor
and multiply-adds per embedding, peak resident memory of each kind of process, and the installed
size of the edge and training dependency sets.

It exists apart from the quality module because everything here measures the machine and the
install (much of it in fresh interpreters), not how well defects are found.
"""

from __future__ import annotations

import importlib.metadata as md
import textwrap
from pathlib import Path

from train.evidence_plumbing import (
    EDGE_DISTS,
    MLP_LAYERS,
    TRAIN_EXTRA,
    Plan,
    python_child,
    read_json,
    twinspect,
)

# ----------------------------------------------------------------------------------- speed
GEMM_CODE = """
import json, time
import numpy as np
rng = np.random.default_rng(0)
def best(f, reps):
    f()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return min(t), float(np.median(t))
n = 1024
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
t_best, t_med = best(lambda: a @ b, 15)
gflops = 2 * n**3 / t_best / 1e9
ws = [rng.standard_normal(s, dtype=np.float32) * 0.05 for s in %(layers)r]
def fwd(x):
    for i, w in enumerate(ws):
        x = x @ w
        if i < len(ws) - 1:
            x = np.maximum(x, 0)
    return x
x1 = rng.standard_normal((1, 936), dtype=np.float32)
x64 = rng.standard_normal((64, 936), dtype=np.float32)
reps = 2000
b1 = [best(lambda: fwd(x1), 1)[0] for _ in range(reps)]
b64 = [best(lambda: fwd(x64), 1)[0] for _ in range(300)]
print(json.dumps({
    "gemm_n": n, "gemm_gflops": gflops, "gemm_median_gflops": 2 * n**3 / t_med / 1e9,
    "numpy_mlp_batch1_us_p50": float(np.median(b1)) * 1e6,
    "numpy_mlp_batch64_us_per_image_p50": float(np.median(b64)) * 1e6 / 64,
}))
"""


def embedding_macs(run: Path) -> int:
    """Multiply-adds of one embedding of the run's network (Dense and Conv2D layers)."""
    from train.model import load_model

    emb = load_model(run / "embedding.keras")
    macs = 0
    for layer in emb.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            k = layer.kernel.shape
            macs += int(k[0]) * int(k[1])
        elif kind == "Conv2D":
            kh, kw, cin, cout = (int(v) for v in layer.kernel.shape)
            _, h, w, _ = layer.output.shape
            macs += int(h) * int(w) * kh * kw * cin * cout
    return macs


def gemm_rate() -> dict:
    """numpy float32 GEMM rate, single-threaded, in a fresh process (BLAS threads pinned to 1)."""
    one = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return python_child(GEMM_CODE % {"layers": list(MLP_LAYERS)}, env=one)


RSS_PEAK = """
def peak():
    hwm = None
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_mib": hwm if hwm is not None else ru, "ru_maxrss_mib": ru}
"""

RSS_EDGE = """
import json, resource, time
import numpy as np
from edge_runtime.datasets import load_labeled
from edge_runtime.model import load_model_dir
from edge_runtime.preprocess import to_tensor
m = load_model_dir(%(model)r)
x = np.asarray(load_labeled(%(data)r, split="test").images)[:%(n)d]
t = to_tensor(x, m.spec)
for i in range(len(t)):
    m.score_batch(t[i:i+1])
for i in range(0, len(t), 64):
    m.score_batch(t[i:i+64])
print(json.dumps(peak()))
"""

RSS_KERAS = """
import json, os, resource
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
from edge_runtime.datasets import load_labeled
from edge_runtime.preprocess import to_tensor
from train.model import input_spec, load_model
emb = load_model(%(emb)r)
x = np.asarray(load_labeled(%(data)r, split="test").images)[:%(n)d]
t = to_tensor(x, input_spec(%(arch)r))
for i in range(min(len(t), 50)):
    emb.predict(t[i:i+1], verbose=0)
emb.predict(t, batch_size=64, verbose=0)
print(json.dumps(peak()))
"""

RSS_BARE = """
import json, resource
import numpy
print(json.dumps(peak()))
"""


def peak_rss(model: Path, run: Path, data: Path, n: int = 500) -> dict:
    """Peak resident memory of each process kind, each in a fresh interpreter. The child's own
    high-water mark (VmHWM) is the figure: on Linux, getrusage's ru_maxrss of a child also
    carries the parent's resident size at fork (kept as ru_maxrss_mib in the JSON)."""
    arch = read_json(run / "config.json").get("arch", "mlp")
    fill = {"model": str(model), "emb": str(run / "embedding.keras"), "data": str(data), "n": n}
    fill["arch"] = arch
    out = {}
    for name, code in (
        ("python + numpy only", RSS_BARE),
        ("edge inspection (onnxruntime)", RSS_EDGE),
        ("Keras load + predict", RSS_KERAS),
    ):
        out[name] = python_child("import resource\n" + RSS_PEAK + textwrap.dedent(code) % fill)
    return out


def bench(plan: Plan, model: Path, run: Path, data: Path, name: str) -> dict:
    out = plan.work / "bench" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    twinspect(
        "bench",
        "--model",
        str(model),
        "--data",
        str(data / "recording"),
        "--run",
        str(run),
        "--json",
        str(out),
    )
    return read_json(out)


# ----------------------------------------------------------------------------------- footprint
def _closure(roots: list[str]) -> dict[str, int]:
    """Installed distributions needed by `roots` (following Requires-Dist, markers evaluated
    without extras), each with the summed sizes of its RECORD entries in bytes."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, int] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[name] = sum((f.size or 0) for f in (dist.files or []))
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def footprint() -> dict:
    edge = _closure(list(EDGE_DISTS))
    train = _closure(list(EDGE_DISTS) + list(TRAIN_EXTRA))
    # tensorflow-cpu may be installed as "tensorflow"; count whichever is present.
    if "tensorflow-cpu" not in train and "tensorflow" not in train:
        train.update(_closure(["tensorflow"]))
    mib = 2**20
    top = sorted(train.items(), key=lambda kv: -kv[1])[:8]
    return {
        "edge_mib": sum(edge.values()) / mib,
        "edge_dists": len(edge),
        "train_mib": sum(train.values()) / mib,
        "train_dists": len(train),
        "largest_train": {k: v / mib for k, v in top},
        "edge_by_dist": {k: v / mib for k, v in sorted(edge.items(), key=lambda kv: -kv[1])},
    }
