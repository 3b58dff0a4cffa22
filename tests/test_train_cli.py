"""`twinspect train` and `twinspect audit` end to end, in-process, on a tiny generated line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.calibration import DEFAULT_POLICY
from edge_runtime.cli import main
from edge_runtime.errors import BadInput
from edge_runtime.preprocess import InputSpec, to_tensor
from edge_runtime.sidecar import SCHEMA_VERSION

pytest.importorskip("keras")

TINY = ["--arch", "mlp", "--epochs", "5", "--batch-size", "32", "--quiet", "--n-ref", "20"]


def _generate(out: Path, n_train: int, **kw) -> Path:
    args = ["generate", "--out", str(out), "--n-train", str(n_train), "--n-test", "10"]
    args += ["--n-frames", "2", "--workers", "1", "--seed", "5"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("line") / "line", 300)


@pytest.fixture(scope="module")
def run(line, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(line), "--out", str(out), "--seed", "1", *TINY]) == 0
    return out


def test_an_oriented_part_is_sized_for_one_view_and_loaded_once(line, monkeypatch):
    """The terminal mirrored left/right is not a terminal (pixel check 1.0): one view. Its
    26×36 fits the budget as it is, and the data is loaded once."""
    import train.fit as fit

    loads = []
    real = fit.load_dataset
    monkeypatch.setattr(fit, "load_dataset", lambda *a, **k: loads.append(1) or real(*a, **k))
    spec, _, pixels = fit.load_for_views(
        fit.TrainConfig(data=str(line), out="unused"), np.random.SeedSequence(0)
    )
    assert pixels["left/right"] == 1.0 and spec.size == (26, 36) and len(loads) == 1


@pytest.mark.slow
def test_tiny_train_writes_the_run_folder_contract(run, capsys):
    for name in (
        "model.keras",
        "embedding.keras",
        "config.json",
        "metrics.json",
        "reference.json",
        "validation.npz",
        "report.md",
        "pair_distances.png",
        "scores.png",
        "loss.png",
        "roc.png",
    ):
        assert (run / name).is_file(), name
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # no staging left
    ref = json.loads((run / "reference.json").read_text())
    assert ref["arch"] == "mlp"
    assert {k: ref["input"][k] for k in ("height", "width", "channels", "layout", "fit")} == {
        "height": 26,  # auto: the generated line's own size
        "width": 36,
        "channels": 1,
        "layout": "flat",
        "fit": "pad",
    }
    assert ref["input"]["scale"] == 1 / 255 and ref["input"]["color"] == "gray"
    assert ref["roi"] is None
    assert len(ref["reference"]["vector"]) == 128 and ref["reference"]["n"] == 20
    assert len(ref["reference"]["images_sha256"]) == 64
    # --metric auto: the candidate that separated validation + synthetic anomalies better ships
    choice = json.loads((run / "metrics.json").read_text())["metric_choice"]
    figures = choice["candidates"]
    assert set(figures) == {"minkowski p=4", "mahalanobis"} and "synthetic" in choice["why"]
    from train.score_choice import KNOWN_TOLERANCE

    known = choice["known"]  # Mahalanobis must also keep the real defects' validation AUROC
    keeps = known["mahalanobis"] >= known["minkowski p=4"] - KNOWN_TOLERANCE
    wins = figures["mahalanobis"] > figures["minkowski p=4"]
    better = "mahalanobis" if wins and keeps else "minkowski p=4"
    assert choice["chosen"] == better and ref["metric"]["name"] == better.split()[0]
    assert ref["threshold"]["policy"] == DEFAULT_POLICY  # the CLI default, as written
    assert set(ref["threshold"]["validation"]) == {
        "auroc",
        "accuracy",
        "f1",
        "escape_rate",
        "overkill_rate",
        "n_good",
        "n_defect",
        "median_good_score",
    }
    assert ref["labels"]["0"] == "good" and ref["labels"]["2"] == "blocked hole"
    protos = ref["prototypes"]  # each known defect type, for NG → nearest type / NOVEL
    assert set(protos) == {"1", "2", "3", "4", "5"}
    assert all(len(p["vector"]) == 128 and p["radius"] > 0 for p in protos.values())
    assert all(np.shape(p["inv_cov"]) == (128, 128) for p in protos.values())  # each type's shape
    t = ref["training"]
    assert t["epochs"] == 5 and t["seed"] == 1 and t["arch"] == "mlp" and t["n_val"] > 0
    assert len(t["data_sha256"]) == 64 and t["data"].endswith("train")

    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["validation"]
    assert val["reference"]["auroc"] > 0.75  # clearly better than chance after 3 epochs
    assert val["pairs"]["auroc"] > 0.6
    for m in (val["reference"], val["pairs"]):
        for key in ("accuracy", "f1", "escape_rate", "overkill_rate", "per_label"):
            assert key in m
    assert len(metrics["loss"]["train"]) == len(metrics["loss"]["val"]) == 5

    # validation.npz: the validation split, scored by training; the scores are reproducible
    # from embedding.keras + reference.json through the one scoring implementation.
    from edge_runtime.scoring import part_scores
    from train.model import load_model
    from train.run_folder import read_reference

    with np.load(run / "validation.npz", allow_pickle=False) as z:
        images, labels, paths, scores = z["images"], z["labels"], z["paths"], z["scores"]
    assert images.dtype == np.uint8 and images.shape[1:] == (26, 36)
    assert len(labels) == len(paths) == len(scores) == len(images) == t["n_val"]
    assert scores.dtype == np.float64
    x = to_tensor(images, InputSpec())
    emb = load_model(run / "embedding.keras").predict(x, verbose=0)
    sc = read_reference(run)
    again = part_scores(emb, x, sc.reference.vector, sc.metric, sc.fusion, sc.input)
    assert np.allclose(again, scores, rtol=1e-5, atol=1e-7)
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 1 and config["data_sha256"] == t["data_sha256"]


@pytest.mark.slow
def test_same_seed_same_reference_vector(run, line, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--data", str(line), "--out", str(again), "--seed", "1", *TINY]) == 0
    a = json.loads((run / "reference.json").read_text())
    b = json.loads((again / "reference.json").read_text())
    assert a["reference"] == b["reference"]
    assert a["threshold"]["value"] == b["threshold"]["value"]


@pytest.mark.slow
def test_averaged_weights_are_recorded_and_differ_from_the_last_epochs(run, line, tmp_path, capsys):
    averaged = tmp_path / "averaged"
    args = ["train", "--data", str(line), "--out", str(averaged), "--seed", "1", *TINY]
    assert main([*args, "--average-last", "3"]) == 0
    metrics = json.loads((averaged / "metrics.json").read_text())
    assert metrics["averaged_epochs"] == 3
    assert "weights: the mean of the last 3 epochs' (--average-last)" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["averaged_epochs"] == 1  # the mlp
    assert "weights are the mean of the last 3 epochs'" in (averaged / "report.md").read_text()
    a = json.loads((run / "reference.json").read_text())["reference"]["vector"]
    b = json.loads((averaged / "reference.json").read_text())["reference"]["vector"]
    assert not np.allclose(a, b)  # same seed, same pairs: only the averaging differs


@pytest.mark.slow
def test_audit_then_retrain_without_the_listed_records_and_holdout(run, line, tmp_path, capsys):
    out = tmp_path / "audit.csv"
    args = ["audit", "--run", str(run), "--data", str(line), "--out", str(out), "--top", "10"]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert 0 < len(rows) <= 10
    assert {"path", "label", "score", "robust_z"} <= set(rows[0])
    d = [float(r["disagreement"]) for r in rows]
    assert d == sorted(d, reverse=True) and d[-1] > 0
    assert out.with_suffix(".png").is_file()
    assert "disagree with their label" in capsys.readouterr().out

    clean = tmp_path / "clean"
    args = ["train", "--data", str(line), "--out", str(clean), *TINY, "--exclude", str(out)]
    assert main([*args, "--holdout-defect", "1", "--epochs", "2"]) == 0
    config = json.loads((clean / "config.json").read_text())
    assert config["n_excluded"] == len(rows)
    metrics = json.loads((clean / "metrics.json").read_text())
    h = metrics["holdout"]
    assert h["label"] == "1" and h["n"] > 0 and 0.0 <= h["auroc"] <= 1.0
    assert "1" not in metrics["validation"]["reference"]["per_label"]
    assert "held-out defect 1" in capsys.readouterr().out


# ------------------------------------------------------------------------------ bad input
def _fails(capsys, args: list[str], *needles: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def existing_run(tmp_path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    return out


def _untouched(run_dir: Path) -> None:
    assert (run_dir / "keep.txt").read_text() == "previous run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]
    assert [p.name for p in run_dir.parent.iterdir() if p.name.startswith(".")] == []


def test_unknown_metric_policy_and_arch(capsys, existing_run, line):
    base = ["train", "--data", str(line), "--out", str(existing_run)]
    _fails(capsys, [*base, "--metric", "cosine"], "unknown metric 'cosine'")
    _fails(capsys, [*base, "--threshold-policy", "precision:0.9"], "unknown threshold policy")
    _fails(capsys, [*base, "--arch", "vit"], "unknown arch 'vit'")
    _fails(capsys, [*base, "--residual", "maybe"], "--residual 'maybe'")
    _fails(capsys, [*base, "--n-ref", "some"], "--n-ref")
    _fails(capsys, [*base, "--arch", "mlp", "--views", "4"], "--views 4 needs --arch cnn")
    _fails(capsys, [*base, "--metric", "auto", "--n-ref", "1"], "--metric auto needs --n-ref")
    _fails(capsys, [*base, "--average-last", "31"], "--average-last must be between 0 and")
    _untouched(existing_run)


def test_n_ref_larger_than_the_good_set(capsys, existing_run, line):
    args = ["train", "--data", str(line), "--out", str(existing_run), "--n-ref", "100000"]
    _fails(capsys, args, "--n-ref 100000 is larger than the", "good training images")
    _untouched(existing_run)


def test_empty_dataset(capsys, existing_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, ["train", "--data", str(empty), "--out", str(existing_run)], "empty")
    _untouched(existing_run)


def test_good_only_training_calibrates_on_good_parts(capsys, existing_run, line, tmp_path):
    only_good = tmp_path / "only_good"
    shutil.copytree(line / "train" / "0", only_good / "train" / "good")
    args = ["train", "--data", str(only_good), "--out", str(existing_run)]
    _fails(
        capsys, [*args, "--threshold-policy", "recall:0.99"], "no defective images", "good-quantile"
    )
    _fails(capsys, [*args, "--threshold-policy", "f1"], "no defective images", "good-quantile")
    _untouched(existing_run)
    run = tmp_path / "good_only_run"
    assert main(["train", "--data", str(only_good), "--out", str(run), *TINY]) == 0
    ref = json.loads((run / "reference.json").read_text())
    assert ref["threshold"]["policy"] == "good-quantile:0.995"
    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["validation"]["reference"]
    assert metrics["good_only"] and set(val["per_label"]) == {"synthetic"}
    # the score is voted on like any line's, on the validation goods and their anomalies alone
    choice = metrics["metric_choice"]
    assert set(choice["candidates"]) == {"minkowski p=4", "mahalanobis"} and not choice["known"]
    assert choice["chosen"].split()[0] == ref["metric"]["name"]
    assert (
        metrics["residual"]["chosen"] in ("on", "off") and "residual" in metrics["residual"]["why"]
    )
    # the threshold passes 99.5% of the good validation parts (bagged: within a part or two)
    assert val["overkill_rate"] <= 0.03 and val["n_defect"] > 0


def test_no_good_images(capsys, existing_run, line, tmp_path):
    only_bad = tmp_path / "only_bad"
    shutil.copytree(line / "train" / "2", only_bad / "2")
    args = ["train", "--data", str(only_bad), "--out", str(existing_run)]
    _fails(capsys, args, "training needs good images", "found 0 good")
    _untouched(existing_run)


def test_images_that_cannot_be_used(capsys, existing_run, line, tmp_path):
    data = tmp_path / "broken"
    shutil.copytree(line / "train", data)
    (data / "0" / "truncated.png").write_bytes(b"\x89PNG\r\n")  # cannot be read or resized
    nan = np.full((26, 36), np.nan, np.float32)
    assert cv2.imwrite(str(data / "1" / "nan.tiff"), nan)  # float pixels with NaN
    args = ["train", "--data", str(data), "--out", str(existing_run)]
    err = _fails(capsys, args, "2 images cannot be used")
    assert "truncated.png" in err or "nan.tiff" in err
    _untouched(existing_run)


def test_nan_and_wrong_size_arrays_are_refused():
    from train.fit import check_images

    spec = InputSpec()
    bad = np.zeros((3, 26, 36), np.float32)
    bad[1, 2, 3] = np.inf
    with pytest.raises(BadInput, match="1 images hold NaN or inf"):
        check_images(bad, spec, "arr")
    with pytest.raises(BadInput, match="must be 26×36"):
        check_images(np.zeros((3, 20, 20), np.uint8), spec, "arr")
    ok = check_images(np.full((2, 26, 36), 7.0), spec, "arr")
    assert ok.dtype == np.uint8 and ok.max() == 7


def test_missing_data_and_bad_exclude(capsys, existing_run, line, tmp_path):
    missing = tmp_path / "nope"
    _fails(capsys, ["train", "--data", str(missing), "--out", str(existing_run)], "nope")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,label\na.png,0\n")
    args = ["train", "--data", str(line), "--out", str(existing_run), "--exclude", str(wrong)]
    _fails(capsys, args, "needs a 'path' column")
    _untouched(existing_run)


def test_train_help_and_missing_tensorflow_in_a_fresh_process(line, tmp_path):
    """Without TensorFlow: --help works, and training says which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "sys.modules['keras'] = None\n"
        "from edge_runtime.cli import main\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        f"sys.exit(main(['train', '--data', {str(line)!r}, '--out', {str(tmp_path / 'r')!r}]))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "--n-ref" in proc.stdout
    assert "needs the 'train' extra" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------ pieces
def test_staged_dir_replaces_only_on_success(tmp_path):
    from train.run_folder import staged_dir

    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (out / "old.txt").exists()
    with staged_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_augment_is_seeded_and_label_preserving():
    from train.fit import augment

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 26, 36), dtype=np.uint8)
    a = augment(images, np.random.default_rng(1))
    b = augment(images, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == images.shape and np.array_equal(a, b)
    flipped = augment(images, np.random.default_rng(2), shift=0)
    pairs = zip(flipped, images, strict=True)
    same = [np.array_equal(f, i) or np.array_equal(f, i[::-1]) for f, i in pairs]
    assert all(same) and not np.array_equal(flipped, images)


def test_audit_cut_agrees_with_most_labels_by_hand():
    from train.audit import agreement_cut, robust_z

    z = np.array([-1.0, 0.0, 1.0, 2.0, 15.0, 10.0, 12.0, 0.5])
    good = np.array([True] * 5 + [False] * 3)
    # cut 6 (between 2 and 10): one good above (15) + one defect below (0.5) = 2 wrong
    assert agreement_cut(z, good) == pytest.approx(6.0)
    scores = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    zr, med, sigma = robust_z(scores, np.ones(5, bool))
    assert med == 3.0 and sigma == pytest.approx(1.4826)
    assert zr[-1] == pytest.approx(97 / 1.4826)


def test_bad_geometry_and_label_files_are_one_line_each(capsys, existing_run, line, tmp_path):
    base = ["train", "--data", str(line), "--out", str(existing_run)]
    _fails(capsys, [*base, "--input-size", "26by36"], "--input-size must be HxW")
    _fails(capsys, [*base, "--input-size", "8x8", "--arch", "cnn"], "too small for the cnn")
    _fails(capsys, [*base, "--channels", "3"], "--channels 3 asks for colour", "use --channels 1")
    named = tmp_path / "named"
    shutil.copytree(line, named)
    (named / "labels.json").write_text('{"0": "good", "1": "porosity", "9": "ghost"}')
    args = ["train", "--data", str(named), "--out", str(existing_run)]
    _fails(capsys, args, "labels.json: names labels that are not in the data: 9")
    _untouched(existing_run)


def test_exclude_listing_exactly_the_unreadable_files_is_accepted(tmp_path, line):
    from train.fit import TrainConfig, load_dataset
    from train.model import input_spec

    data = tmp_path / "broken"
    shutil.copytree(line / "train", data)
    (data / "0" / "truncated.png").write_bytes(b"\x89PNG\r\n")
    listed = tmp_path / "skip.csv"
    listed.write_text(f"path\n{data / '0' / 'truncated.png'}\n")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "r"), exclude=str(listed))
    ds = load_dataset(cfg, input_spec("cnn"), np.random.default_rng(0))
    assert ds.excluded == 1 and ds.labels.size == 300


def test_knn_metric_trains_exports_and_judges(line, tmp_path):
    from edge_runtime.model import load_model_dir
    from export.build import export_run

    run = tmp_path / "knn"
    assert main(["train", "--data", str(line), "--out", str(run), *TINY, "--metric", "knn"]) == 0
    export_run(run, tmp_path / "model", log=lambda *_: None)
    model = load_model_dir(tmp_path / "model")
    assert model.sidecar.metric.name == "knn" and model.sidecar.metric.bank.shape[1] == 128
    assert main(["eval", "--model", str(tmp_path / "model"), "--data", str(line)]) == 0


def test_a_fused_score_trains_exports_and_the_line_reproduces_it(line, tmp_path):
    """`--residual on`: the sidecar carries the pixel residual, and the line's Inspector scores
    each validation image exactly as training did (validation.npz)."""
    from edge_runtime.inspector import Inspector
    from edge_runtime.model import load_model_dir
    from export.build import export_run

    run = tmp_path / "fused"
    assert main(["train", "--data", str(line), "--out", str(run), *TINY, "--residual", "on"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["residual"]["chosen"] == "on"
    export_run(run, tmp_path / "model", log=lambda *_: None)
    model = load_model_dir(tmp_path / "model")
    assert model.sidecar.schema_version == SCHEMA_VERSION and model.sidecar.fusion is not None
    with np.load(run / "validation.npz") as z:
        images, scores = z["images"], z["scores"]
    again = Inspector(model, max_batch=32).score_patches(images)
    np.testing.assert_allclose(again, scores, rtol=1e-4, atol=1e-5)
    residual_only = model.sidecar.fusion.residual.scores(to_tensor(images, model.spec), model.spec)
    assert np.corrcoef(residual_only, scores)[0, 1] > 0.1  # the residual is really in the score
    # NOVEL: the region of the rejected known defects' two terms travels in the sidecar, and
    # the line calls few of those very validation parts NOVEL (its radius holds 97.5% of them)
    novelty = metrics["novelty"]
    assert novelty["placed"] and model.sidecar.fusion.novelty is not None, novelty
    with np.load(run / "validation.npz") as z:
        labels = z["labels"]
    _, verdicts = Inspector(model, max_batch=32).judge_patches(images)
    rejected = [v.verdict for v, lab in zip(verdicts, labels, strict=True) if lab != "0"]
    rejected = [v for v in rejected if v != "OK"]
    assert len(rejected) >= 10 and rejected.count("NOVEL") <= 0.1 * len(rejected)
    # a region per known kind with enough rejected validation parts; the rest share one
    from edge_runtime.scoring import MIN_NOVELTY_PARTS

    over = scores > model.sidecar.threshold.value
    counts = {k: int(np.sum(over & (labels == k))) for k in set(labels.tolist()) - {"0"}}
    own = sorted(k for k, n in counts.items() if n >= MIN_NOVELTY_PARTS)
    kinds = [r.label for r in model.sidecar.fusion.novelty.regions]
    assert kinds == own + ([None] if len(own) < sum(n > 0 for n in counts.values()) else []), (
        kinds,
        counts,
    )
