"""The comparison baselines score a tiny set from the synthetic line sanely (not the benchmark's
figures: those come from `python -m train.evidence`)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import BadInput
from edge_runtime.evaluation import auroc
from edge_runtime.scoring import Metric, distances
from train.baselines import (
    LogisticPixels,
    PcaMahalanobis,
    PcaReconstruction,
    PixelTemplate,
    all_baselines,
    calibrated_report,
    flat_pixels,
    label_auroc,
)


def _render(n: int, seed: int, defect_rate: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """n stills of the synthetic line (the generator's own renderer), labels "0".."5"."""
    from edge_runtime.synthetic.defects import DEFECT_LABELS, sample_defect
    from edge_runtime.synthetic.render import render_still, sample_nuisance

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        lab = str(rng.choice(DEFECT_LABELS)) if rng.uniform() < defect_rate else "0"
        images.append(render_still(sample_nuisance(rng), sample_defect(rng, lab), rng))
        labels.append(lab)
    return np.stack(images), np.asarray(labels)


@pytest.fixture(scope="module")
def tiny():
    """(train images, labels), (validation …), (test …): 240 / 120 / 160 images."""
    return _render(240, 0), _render(120, 1), _render(160, 2)


@pytest.mark.parametrize("make", [PixelTemplate, PcaReconstruction, PcaMahalanobis, LogisticPixels])
def test_each_baseline_scores_defects_higher(tiny, make):
    (xtr, ytr), _, (xte, yte) = tiny
    method = make().fit(xtr, ytr)
    s = method.score(xte)
    assert s.dtype == np.float64 and s.shape == (len(yte),)
    assert np.all(np.isfinite(s))
    a = auroc(s, yte != "0")
    assert 0.6 < a <= 1.0, f"{method.name}: AUROC {a:.3f} on the tiny line"
    # Deterministic: fitting again gives the same scores.
    np.testing.assert_array_equal(make().fit(xtr, ytr).score(xte), s)


def test_template_is_minkowski_to_the_mean_good_image(tiny):
    (xtr, ytr), _, (xte, _) = tiny
    m = PixelTemplate(p=4).fit(xtr, ytr)
    mean_good = flat_pixels(xtr[ytr == "0"]).mean(axis=0)
    np.testing.assert_allclose(m.template, mean_good)
    expected = distances(flat_pixels(xte), mean_good, Metric("minkowski", p=4))
    np.testing.assert_allclose(m.score(xte), expected)
    # Only good images shape the template: changing the defective ones changes nothing.
    x2 = xtr.copy()
    x2[ytr != "0"] = 255
    np.testing.assert_allclose(PixelTemplate().fit(x2, ytr).template, mean_good)


def test_pca_scores_are_zero_on_the_subspace_and_grow_off_it(tiny):
    (xtr, ytr), _, _ = tiny
    rec = PcaReconstruction(n_components=5).fit(xtr, ytr)
    mah = PcaMahalanobis(n_components=5).fit(xtr, ytr)
    assert rec.k == mah.k == 5
    # The mean good image: no reconstruction error and zero Mahalanobis distance.
    mean_img = np.rint(rec.mean.reshape(1, 26, 36) * 255).astype(np.uint8)
    assert rec.score(mean_img)[0] < 0.05 * rec.score(xtr).mean()  # uint8 rounding only
    assert mah.score(mean_img)[0] < 0.1 * mah.score(xtr).mean()
    # The Mahalanobis distance of the good training images is about √k on average.
    good_d2 = mah.score(xtr[ytr == "0"]) ** 2
    assert good_d2.mean() == pytest.approx(5 * (len(good_d2) - 1) / len(good_d2), rel=1e-6)
    # A variance fraction picks the fewest components that explain it.
    k90 = PcaReconstruction(n_components=0.9).fit(xtr, ytr).k
    k99 = PcaReconstruction(n_components=0.99).fit(xtr, ytr).k
    assert 1 <= k90 < k99


def test_logistic_regression_learns_its_training_labels(tiny):
    (xtr, ytr), _, _ = tiny
    m = LogisticPixels().fit(xtr, ytr)
    assert auroc(m.score(xtr), ytr != "0") > 0.95
    with pytest.raises(BadInput, match="good and defective"):
        LogisticPixels().fit(xtr[ytr == "0"], ytr[ytr == "0"])


def test_unsupervised_baselines_need_good_images(tiny):
    (xtr, ytr), _, _ = tiny
    bad = ytr != "0"
    for m in (PixelTemplate(), PcaReconstruction(), PcaMahalanobis()):
        with pytest.raises(BadInput, match="good images"):
            m.fit(xtr[bad], ytr[bad])


def test_calibrated_report_keeps_the_recall_policy_on_validation(tiny):
    (xtr, ytr), (xva, yva), (xte, yte) = tiny
    for m in all_baselines():
        m.fit(xtr, ytr)
        sv, st = m.score(xva), m.score(xte)
        rep = calibrated_report(sv, yva, st, yte, "recall:0.99")
        # With ~60 validation defects, recall 0.99 allows no escape on validation itself.
        assert np.all(sv[yva != "0"] > rep["threshold"])
        assert rep["policy"] == "recall:0.99"
        assert 0.0 <= rep["escape_rate"] <= 1.0 and 0.0 <= rep["overkill_rate"] <= 1.0
        assert rep["auroc"] == pytest.approx(auroc(st, yte != "0"))
        for lab, fig in rep["per_label"].items():
            assert fig["auroc"] == pytest.approx(label_auroc(st, yte, lab))


@pytest.mark.slow
def test_reference_recipe_trains_on_fixed_pairs_and_scores_both_ways(tiny):
    pytest.importorskip("tensorflow")
    from train.reference_recipe import ReferenceRecipe

    (xtr, ytr), _, (xte, yte) = tiny
    r = ReferenceRecipe(epochs=2, n_ref=30, seed=0).fit(xtr, ytr)
    emb, pair = r.score_embedding(xte), r.score_pairs(xte)
    for s in (emb, pair):
        assert s.shape == (len(yte),) and np.all(np.isfinite(s)) and np.all(s >= 0)
    assert auroc(emb, yte != "0") > 0.6
    # Same seed, same pairs, same network.
    again = ReferenceRecipe(epochs=2, n_ref=30, seed=0).fit(xtr, ytr)
    np.testing.assert_allclose(again.score_embedding(xte), emb, rtol=1e-5, atol=1e-6)


def test_baselines_module_prints_aurocs_on_a_generated_line(tmp_path):
    """`python -m train.baselines DATA` on a tiny generated line, without TensorFlow."""
    import subprocess
    import sys

    data = tmp_path / "line"
    gen = [sys.executable, "-m", "edge_runtime.cli", "generate", "--out", str(data)]
    gen += ["--n-train", "120", "--n-test", "80", "--n-frames", "4", "--workers", "1"]
    subprocess.run(gen, check=True, capture_output=True)
    code = (
        "import sys\nfrom train.baselines import main\nrc = main([sys.argv[1]])\n"
        "assert 'tensorflow' not in sys.modules, 'imported TensorFlow'\nsys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {line[:32].strip(): line[32:].split() for line in out.stdout.splitlines()[2:]}
    assert set(rows) == {
        "pixel template",
        "PCA reconstruction",
        "PCA Mahalanobis",
        "logistic regression (pixels)",
    }
    for name, vals in rows.items():
        assert 0.5 < float(vals[0]) <= 1.0, f"{name}: {vals}"


def test_footprint_counts_the_edge_set_inside_the_train_set():
    pytest.importorskip("packaging")
    from train.evidence import EDGE_DISTS, TRAIN_EXTRA, _closure

    edge = _closure(list(EDGE_DISTS))
    train = _closure(list(EDGE_DISTS) + list(TRAIN_EXTRA))
    assert "numpy" in edge and "onnxruntime" in edge
    assert set(edge) <= set(train)
    assert all(size > 0 for size in edge.values())


def _fake_results(tw_auroc: float, pca_auroc: float) -> dict:
    """The shape `train.evidence` writes, with made-up figures, for the report renderer."""
    from train.evidence import TWINSPECT

    def fig(a):
        return {
            "auroc": a,
            "accuracy": 0.8,
            "escape_rate": 0.01,
            "overkill_rate": 0.3,
            "per_label": {"1": {"auroc": a}},
        }

    names = [TWINSPECT, "pixel template", "PCA reconstruction", "PCA Mahalanobis"]
    aurocs = [tw_auroc, 0.8, pca_auroc, 0.75]
    bench = {
        "latency_us": {
            s: {"p50": 10.0, "p99": 20.0} for s in ("preprocess", "embed", "score", "total")
        },
        "throughput": {"parts_per_s": 50000.0, "parts": 640},
        "load_ms": {"median": 5.0},
        "edge_process": {"peak_rss_mb": 100.0, "frames": 10},
        "keras_per_image": {"n": 5, "p50_us": 40000.0, "p99_us": 50000.0, "ratio_p50": 800},
    }
    from train.evidence import VERSIONED

    v = dict.fromkeys(VERSIONED, "1.0")
    return {
        "plan": {"seed": 0, "quick": False},
        "meta": {
            "date": "today",
            "wall_minutes": 1.0,
            "command": "python -m train.evidence",
            "json": "results/benchmarks.json",
            "data": "d",
            "training": "t",
            "machine": {
                "cpu": "cpu",
                "cores": 2,
                "memory": "1 GiB",
                "os": "Linux",
                "python": "3.11",
                "versions": v,
                "git": "abc",
            },
        },
        "quality": {n: fig(a) for n, a in zip(names, aurocs, strict=True)},
        "split": {
            "n_test": 10,
            "n_val": 5,
            "n_fit": 20,
            "n_fit_good": 12,
            "recipe": {"epochs": 20, "batch_size": 128},
            "settings": {},
        },
        "unseen": {"1": dict(zip(names, aurocs, strict=True))},
        "difficulty": {"1": {TWINSPECT: tw_auroc, "pixel template": 0.8}},
        "seeds": {
            s: {
                n: {"auroc": a, "escape_rate": 0.0, "overkill_rate": 0.5}
                for n, a in zip(names, aurocs, strict=True)
            }
            for s in ("0", "1")
        },
        "speed": {
            "gemm": {
                "gemm_n": 8,
                "gemm_gflops": 100.0,
                "numpy_mlp_batch1_us_p50": 30.0,
                "numpy_mlp_batch64_us_per_image_p50": 10.0,
            },
            "models": {"default (mlp)": {"macs": 643072, "bench": bench}},
        },
        "footprint": {
            "edge_mib": 1.0,
            "edge_dists": 4,
            "train_mib": 2.0,
            "train_dists": 9,
            "largest_train": {"x": 1.0},
        },
        "rss": {"edge": {"peak_rss_mib": 100.0}},
        "stages": {"all": 1.0},
        "commands": ["twinspect eval"],
    }


def test_benchmarks_report_says_plainly_whether_twinspect_beats_the_baselines():
    from train.evidence import markdown

    win = markdown(_fake_results(0.99, 0.95))
    assert "**beats** the pixel template and both PCA baselines" in win
    assert "does not beat" not in win
    lose = markdown(_fake_results(0.90, 0.95))
    assert "**does not beat** PCA reconstruction (0.950)" in lose
    for section in (
        "## Unseen defect types",
        "## Difficulty sweep",
        "## Seed spread",
        "## Speed",
        "## Footprint",
        "643,072 MACs",
    ):
        assert section in lose
