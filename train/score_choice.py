"""`--metric auto` (the default): which distance to the good parts the line scores with.

Two candidates, both one small computation on the line: Minkowski p=4 to the mean good embedding
(what the contrastive loss shapes for the defect kinds it is shown) and the Mahalanobis distance
under the good embeddings' Ledoit–Wolf shrunk covariance (which also weighs the directions the
training never pulled apart — where a kind nobody has shown the network tends to land).

Measured (`python -m train.score_study`, and the held-out-type runs in BENCHMARKS.md):
- default line, five types each held out in turn (small network, no synthetic anomalies): mean
  AUROC of the unseen type p4 0.947 (worst 0.849) against Mahalanobis 0.988 (worst 0.956); the
  known types 0.9989 vs 0.9985; the default model, every type known: 0.9997 vs 0.9986.
- default line from good parts only: p4 0.967, Mahalanobis 0.989.
- tile product (scaled network trained with synthetic anomalies), seeds 0 and 4: p4 0.987 and
  0.977, Mahalanobis 0.969 and 0.962.

Neither wins everywhere, and the line's validation parts cannot tell which will do better on a
kind nobody has shown the network: they hold only the kinds it was trained on. Synthetic
anomalies of the validation goods (train/anomalies.py) can: added to the validation parts they
picked the candidate that was better on unseen kinds in each case above (default line:
Mahalanobis, AUROC 0.864 vs 0.822; tile: p4, 0.88 vs 0.85). But on the default line Mahalanobis
also cost the kinds the line does know: test accuracy 99.3% → 97.9% (overkill 0.5% → 2.5%),
recording AUROC 0.9998 → 0.9983. A line judged on the defects it was trained for should not pay
that for a proxy, so Mahalanobis ships only when it wins the vote *and* keeps the real defects'
validation AUROC within KNOWN_TOLERANCE of p4's; `--metric mahalanobis` asks for it outright. A
network trained against synthetic anomalies has seen their kinds, so a good-only line, which
learns from nothing else, takes Mahalanobis without a vote.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_runtime.evaluation import auroc
from edge_runtime.preprocess import InputSpec, to_tensor
from edge_runtime.scoring import Metric, distances, fit_inv_cov

AUTO = "auto"
KNOWN_TOLERANCE = 0.001  # validation AUROC on real defects Mahalanobis may lose to p4


def _label(metric: Metric) -> str:
    return f"minkowski p={metric.p:g}" if metric.name == "minkowski" else metric.name


def choose_metric(
    embed: Callable[[np.ndarray], np.ndarray],
    good_embeddings: np.ndarray,
    reference: np.ndarray,
    x_val: np.ndarray,
    val_is_defect: np.ndarray,
    val_good_images: np.ndarray,
    spec: InputSpec,
    seed: int,
    good_only: bool,
) -> tuple[Metric, dict]:
    """(the chosen metric, what was measured and why) — the dict goes to metrics.json."""
    from train.anomalies import synthesize

    maha = Metric("mahalanobis", inv_cov=fit_inv_cov(good_embeddings)[0])
    mink = Metric("minkowski", p=4.0)
    if good_only:
        why = "good-only line: the network knows no real defect kind (measured 0.989 vs 0.967)"
        return maha, {"chosen": _label(maha), "why": why, "candidates": {}}
    pad = spec.pad_value if spec.pad_mode == "constant" else None
    syn = synthesize(val_good_images, np.random.default_rng(seed), pad_value=pad)
    emb = np.concatenate([embed(x_val), embed(to_tensor(syn, spec))])
    y = np.r_[np.asarray(val_is_defect, dtype=bool), np.ones(len(syn), dtype=bool)]
    real = np.arange(len(x_val))
    figures, known = {}, {}
    for m in (mink, maha):
        d = distances(emb, reference, m)
        figures[_label(m)] = auroc(d, y)
        known[_label(m)] = auroc(d[real], y[real])
    wins = figures[_label(maha)] > figures[_label(mink)]
    keeps = known[_label(maha)] >= known[_label(mink)] - KNOWN_TOLERANCE
    chosen = maha if wins and keeps else mink
    why = (
        f"AUROC on {len(x_val)} validation parts + {len(syn)} synthetic anomalies of the "
        "validation goods: "
        + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
        + "; on the validation parts alone: "
        + ", ".join(f"{k} {v:.4f}" for k, v in known.items())
    )
    return chosen, {"chosen": _label(chosen), "why": why, "candidates": figures, "known": known}
