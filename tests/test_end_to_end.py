"""The whole chain on a small generated line: generate → train → export → run/eval on the line.

Proof that the shipped model judges parts as the trained one did: the edge runtime's scores on
the validation images equal the scores training computed with Keras.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.model import load_model_dir
from edge_runtime.preprocess import to_tensor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def shipped(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    line, run, model = root / "line", root / "run", root / "model"
    argv = ["--out", str(line), "--n-train", "400", "--n-test", "200", "--n-frames", "40"]
    assert main(["generate", *argv]) == 0
    train = ["train", "--data", str(line), "--out", str(run), "--arch", "mlp", "--epochs", "6"]
    assert main([*train, "--quiet"]) == 0
    assert main(["export", "--run", str(run), "--out", str(model)]) == 0
    return {"line": line, "run": run, "model": model}


def test_runtime_scores_equal_training_scores(shipped):
    model = load_model_dir(shipped["model"])
    with np.load(shipped["run"] / "validation.npz") as z:
        images, trained_scores = z["images"], z["scores"]
    runtime_scores = model.score_batch(to_tensor(images, model.spec))
    np.testing.assert_allclose(runtime_scores, trained_scores, rtol=1e-4, atol=1e-5)
    ref = json.loads((shipped["run"] / "reference.json").read_text())
    assert model.sidecar.threshold.value == ref["threshold"]["value"]


def test_replay_of_the_recording_judges_every_frame(shipped, tmp_path):
    out = tmp_path / "replay.jsonl"
    rec = shipped["line"] / "recording"
    argv = ["run", "--model", str(shipped["model"]), "--source", str(rec), "--out", str(out)]
    assert main(argv) == 0
    records = [json.loads(s) for s in out.read_text().splitlines()]
    frames = [r for r in records if "frame" in r]
    assert [r["frame"] for r in frames] == list(range(40))
    assert {r["verdict"] for r in frames} <= {"OK", "NG", "NOVEL"}


def test_eval_on_test_split_and_recording_agree(shipped, tmp_path):
    figures = {}
    for name, args in {
        "test": ["--data", str(shipped["line"]), "--split", "test"],
        "recording": ["--data", str(shipped["line"] / "recording")],
    }.items():
        js = tmp_path / f"{name}.json"
        assert main(["eval", "--model", str(shipped["model"]), *args, "--json", str(js)]) == 0
        figures[name] = json.loads(js.read_text())
    # Six epochs of the small MLP on 400 images: far from the shipped figures, but it must
    # clearly learn, and the recording (camera effects, ROI crop) must not fall apart.
    assert figures["test"]["auroc"] > 0.8
    assert figures["recording"]["auroc"] > 0.7
