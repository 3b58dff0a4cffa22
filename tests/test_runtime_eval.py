"""`twinspect eval` on generated data: the figures are exactly evaluation.report on the runtime's
own scores of the loader's images (folder split and recording with its roi.json)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.datasets import load_labeled
from edge_runtime.evaluation import report
from edge_runtime.model import load_model_dir
from edge_runtime.preprocess import to_tensor


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "line"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "generate", "--out", str(out)]
    cmd += ["--n-train", "12", "--n-test", "36", "--n-frames", "30", "--workers", "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.mark.parametrize(("data", "split"), [("", "test"), ("recording", None)])
def test_eval_figures_match_report_on_runtime_scores(
    untrained_model_dir, line, tmp_path, capsys, data, split
):
    path = line / data if data else line
    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(untrained_model_dir), "--data", str(path), "--json", str(out)]
    assert main(argv + (["--split", split] if split else [])) == 0
    figures = json.loads(out.read_text())
    model = load_model_dir(untrained_model_dir)
    ds = load_labeled(path, split=split, spec=model.spec)
    scores = model.score_batch(to_tensor(ds.images, model.spec))
    expected = report(scores, ds.labels, model.sidecar.threshold.value)
    for key in ("n", "n_good", "n_defect", "tp", "fn", "fp", "tn"):
        assert figures[key] == expected[key]
    for key in ("auroc", "accuracy", "f1", "escape_rate", "overkill_rate"):
        assert figures[key] == pytest.approx(expected[key], rel=1e-9, nan_ok=True)
    assert set(figures["per_label"]) == set(expected["per_label"]) and figures["per_label"]
    for label, d in expected["per_label"].items():
        assert figures["per_label"][label]["n"] == d["n"]
        assert figures["per_label"][label]["escape_rate"] == pytest.approx(d["escape_rate"])
    assert figures["n"] == (36 if split else 30) and figures["n_defect"] > 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "escape rate" in printed and "per defect label" in printed
    assert np.isfinite(figures["auroc"])


def test_eval_threshold_override_and_bad_model(untrained_model_dir, line, tmp_path, capsys):
    argv = ["eval", "--model", str(untrained_model_dir), "--data", str(line), "--split", "test"]
    assert main([*argv, "--threshold", "-1"]) == 0
    assert "(cli)" in capsys.readouterr().out
    assert main(["eval", "--model", str(tmp_path), "--data", str(line)]) == 2


def test_eval_without_split_scores_the_test_split_and_says_so(
    untrained_model_dir, line, tmp_path, capsys
):
    """Issue 11: `eval --data DIR` without --split scored the *train* split, silently."""
    out = tmp_path / "eval.json"
    argv = ["eval", "--model", str(untrained_model_dir), "--data", str(line), "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["n"] == 36 and figures["split"] == "test"  # 36 test images, 12 train
    assert "split test (default" in printed.splitlines()[0]
    assert main([*argv, "--split", "train"]) == 0
    assert "split train" in capsys.readouterr().out.splitlines()[0]
    assert json.loads(out.read_text())["split"] == "train"
