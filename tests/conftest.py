"""Shared fixtures. Models are real: Keras networks exported through the real export path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.calibration import Policy, choose_threshold
from edge_runtime.evaluation import at_threshold, auroc
from edge_runtime.preprocess import InputSpec, to_tensor
from edge_runtime.scoring import Metric, distances
from edge_runtime.sidecar import input_block


def write_untrained_run(
    run_dir: Path,
    arch: str = "mlp",
    n_val: int = 64,
    seed: int = 0,
    spec: InputSpec | None = None,
) -> Path:
    """A run folder in the training contract, with an untrained (randomly initialised) branch.

    Cheap and real: the network, the conversion and the runtime are the shipped code; only the
    weights are untrained. Images are smooth random blobs, half of them with a bright defect.
    """
    from train.model import build_embedding, input_spec

    rng = np.random.default_rng(seed)
    spec = spec or input_spec(arch)
    base = np.clip(rng.normal(90, 20, (n_val, *spec.patch_shape)), 0, 255)
    labels = np.array(["0"] * (n_val // 2) + ["1"] * (n_val - n_val // 2))
    cy, cx = spec.height // 2, spec.width // 2
    base[labels == "1", cy - 3 : cy + 3, cx - 3 : cx + 3] += 120
    images = np.clip(base, 0, 255).astype(np.uint8)
    emb_model = build_embedding(arch, spec, seed=seed)
    emb = emb_model.predict(to_tensor(images, spec), verbose=0)
    good = labels == "0"
    reference = emb[good][:16].mean(axis=0)
    metric = Metric("minkowski", 4.0)
    scores = distances(emb, reference, metric)
    threshold = choose_threshold(scores, ~good, Policy.parse("recall:0.99"))
    fig = at_threshold(scores, ~good, threshold)
    run_dir.mkdir(parents=True, exist_ok=True)
    emb_model.save(run_dir / "embedding.keras")
    ref = {
        "arch": arch,
        "input": input_block(spec),
        "roi": None,
        "reference": {
            "vector": reference.tolist(),
            "n": 16,
            "images_sha256": hashlib.sha256(b"untrained").hexdigest(),
        },
        "metric": metric.to_dict(),
        "threshold": {
            "value": threshold,
            "policy": "recall:0.99",
            "validation": {
                "auroc": auroc(scores, ~good),
                **{k: fig[k] for k in ("accuracy", "f1", "escape_rate", "overkill_rate")},
                "n_good": int(good.sum()),
                "n_defect": int((~good).sum()),
            },
        },
        "labels": {"0": "good", "1": "defect"},
        "training": {"data": "random blobs (untrained fixture)", "seed": seed, "arch": arch},
    }
    (run_dir / "reference.json").write_text(json.dumps(ref))
    np.savez(
        run_dir / "validation.npz",
        images=images,
        labels=labels,
        paths=np.array([f"blob{i}" for i in range(n_val)]),
        scores=scores,
    )
    return run_dir


@pytest.fixture(scope="session")
def untrained_run(tmp_path_factory) -> Path:
    return write_untrained_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="session")
def untrained_model_dir(untrained_run, tmp_path_factory) -> Path:
    from export.build import export_run

    out = tmp_path_factory.mktemp("model") / "model"
    export_run(untrained_run, out, log=lambda *_: None)
    return out


# ------------------------------------------------------------------ the plant's stand-ins
@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free port (edge_runtime/linesim.py). Without it the test skips,
    except under CI, where it fails: CI must install it (`make deps`)."""
    import os

    from edge_runtime.linesim import MOSQUITTO, Broker

    if MOSQUITTO is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed: .ci/run must call `make deps`")
        pytest.skip("mosquitto is not installed (`make deps` installs it)")
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.kill()


@pytest.fixture
def plc():
    """pymodbus's TCP server as the PLC, logging every write (edge_runtime/linesim.py)."""
    from edge_runtime.linesim import Plc

    p = Plc(blocks=3)
    p.start()
    yield p
    p.close()
