"""The scoring and calibration training relies on: metrics against scipy, policies by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import distance

from edge_runtime.calibration import Policy, choose_threshold
from edge_runtime.errors import BadInput, BadModel
from edge_runtime.scoring import Metric, distances, fit_inv_cov

RNG = np.random.default_rng(42)
EMB = RNG.normal(size=(20, 128))
REF = RNG.normal(size=128)


@pytest.mark.parametrize(
    ("metric", "scipy_fn"),
    [
        (Metric("minkowski", 4.0), lambda u, v: distance.minkowski(u, v, 4)),
        (Metric("minkowski", 3.0), lambda u, v: distance.minkowski(u, v, 3)),
        (Metric("minkowski", 1.5), lambda u, v: distance.minkowski(u, v, 1.5)),
        (Metric("chebyshev"), distance.chebyshev),
        (Metric("cityblock"), distance.cityblock),
        (Metric("euclidean"), distance.euclidean),
    ],
    ids=["minkowski4", "minkowski3", "minkowski1.5", "chebyshev", "cityblock", "euclidean"],
)
def test_metric_matches_scipy(metric, scipy_fn):
    expected = [scipy_fn(e, REF) for e in EMB]
    assert np.allclose(distances(EMB, REF, metric), expected, rtol=1e-10)


def test_mahalanobis_matches_scipy_with_shrunk_covariance():
    good = RNG.normal(size=(30, 128))  # fewer samples than dimensions: needs shrinkage
    vi, shrink = fit_inv_cov(good)
    assert 0 < shrink <= 1 and np.all(np.isfinite(vi))
    metric = Metric("mahalanobis", inv_cov=vi)
    expected = [distance.mahalanobis(e, REF, vi) for e in EMB]
    assert np.allclose(distances(EMB, REF, metric), expected, rtol=1e-8)


def test_unknown_metric_is_bad_input():
    with pytest.raises(BadInput, match="unknown metric 'cosine'"):
        Metric("cosine")


# Hand-made: goods 0.1 0.2 0.3 0.45, defects 0.4 0.6 0.7 0.8 0.9 (NG when score > threshold).
SCORES = np.array([0.1, 0.2, 0.3, 0.45, 0.4, 0.6, 0.7, 0.8, 0.9])
DEFECT = np.array([False] * 4 + [True] * 5)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # recall 0.99 of 5 defects: catch all; lowest defect 0.4, next lower score 0.3
        ("recall:0.99", 0.35),
        # recall 0.8: one escape allowed; must catch 0.6, next lower score 0.45
        ("recall:0.8", 0.525),
        # F1: at 0.35 tp 5 fp 1 → 10/11; at 0.525 tp 4 fp 0 fn 1 → 8/9
        ("f1", 0.35),
        # Youden: at 0.35 1 − 1/4 = 0.75; at 0.525 4/5 − 0 = 0.8
        ("youden", 0.525),
        # median of the good scores 0.1 0.2 0.3 0.45
        ("good-quantile:0.5", 0.25),
    ],
)
def test_threshold_policies_by_hand(policy, expected):
    assert choose_threshold(SCORES, DEFECT, Policy.parse(policy)) == pytest.approx(expected)


def test_unknown_policy_is_bad_input():
    with pytest.raises(BadInput, match="unknown threshold policy"):
        Policy.parse("precision:0.9")


def test_knn_is_the_mean_distance_to_the_nearest_good_parts_by_hand():
    from edge_runtime.scoring import coreset, knn_distances

    bank = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    m = Metric("knn", bank=bank, k=2)
    # (1, 0): nearest 1.0 (origin) and √20 (3, 4) → mean (1 + 4.4721) / 2
    assert np.allclose(distances(np.array([[1.0, 0.0]]), np.zeros(2), m), (1 + 20**0.5) / 2)
    assert np.allclose(knn_distances(bank, bank, 1), 0.0)
    # a coreset keeps the far-out good part a random half could drop
    x = np.r_[np.zeros((50, 2)), [[100.0, 100.0]]]
    assert [100.0, 100.0] in coreset(x, m=2).tolist()
    with pytest.raises(BadInput, match="knn metric needs a bank"):
        Metric("knn", bank=bank, k=4)


def test_knn_metric_round_trips_through_the_sidecar(untrained_model_dir):
    import json

    from edge_runtime.sidecar import Sidecar

    d = json.loads((untrained_model_dir / "model.json").read_text())
    bank = np.random.default_rng(0).normal(size=(7, d["output"]["dim"]))
    d["metric"] = Metric("knn", bank=bank, k=3).to_dict()
    back = Sidecar.from_dict(d).metric
    assert back.name == "knn" and back.k == 3 and np.allclose(back.bank, bank, atol=1e-6)
    d["metric"]["bank"] = d["metric"]["bank"][0]  # a vector, not M×D
    with pytest.raises(BadModel, match=r"metric\.bank"):
        Sidecar.from_dict(d)
