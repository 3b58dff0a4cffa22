"""Every policy's threshold on many stratified bootstrap resamples at once, vectorized.

Why: a threshold chosen once on ~200 validation scores moves a lot when a few scores change
(one faint defect can drag `recall:0.99` deep into the good cluster). Re-choosing it on
resampled calibration sets shows how far it can move (its interval), and the median of the
resampled thresholds is a steadier estimate than the single choice (bagging).

Speed: looping `choose_threshold` 500 times costs seconds (its f1/youden/cost scan is quadratic).
Here each resample is a row of sorted indices into the sorted scores, so one pass over a
B×n array gives every resample's threshold. `test_calibration.py` checks that each row's
threshold equals `choose_threshold` on that resample, for every policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_runtime.calibration import Policy


@dataclass(frozen=True)
class Resamples:
    """B stratified resamples: goods and defects each drawn with replacement at their own size,
    so every resample keeps the calibration set's mix (a resample without defects cannot be
    calibrated by a recall policy, and the mix drives cost and accuracy)."""

    good: np.ndarray  # sorted good scores of the calibration set
    bad: np.ndarray  # sorted defect scores
    good_idx: np.ndarray  # B×n_good indices into `good`, each row sorted
    bad_idx: np.ndarray  # B×n_defect indices into `bad`, each row sorted

    @classmethod
    def draw(
        cls, good: np.ndarray, bad: np.ndarray, n_boot: int, rng: np.random.Generator
    ) -> Resamples:
        def rows(n: int) -> np.ndarray:
            if n == 0:  # no defects (good-quantile): nothing to draw
                return np.zeros((n_boot, 0), dtype=np.int64)
            return np.sort(rng.integers(0, n, (n_boot, n)), axis=1)

        good_idx = rows(good.size)
        return cls(good, bad, good_idx, rows(bad.size))

    @property
    def n_boot(self) -> int:
        return self.good_idx.shape[0]

    def rates_at(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(escape rate, overkill rate) of every resample at one fixed threshold."""
        caught_from = np.searchsorted(self.bad, threshold, side="right")  # bad[:k] ≤ threshold
        rejected_from = np.searchsorted(self.good, threshold, side="right")
        escape = (self.bad_idx < caught_from).mean(axis=1) if self.bad.size else np.zeros(0)
        overkill = (self.good_idx >= rejected_from).mean(axis=1)
        return escape, overkill

    def thresholds(self, policy: Policy) -> np.ndarray:
        """The threshold `choose_threshold(resample, policy)` gives, for every resample."""
        if policy.name == "good-quantile":
            return np.quantile(self.good[self.good_idx], policy.value, axis=1)
        base = self._recall(policy.value) if policy.name == "recall" else self._scan(policy)
        if policy.max_overkill is None:
            return base
        cap = np.quantile(self.good[self.good_idx], 1.0 - policy.max_overkill, axis=1)
        return np.maximum(base, cap)

    def _recall(self, recall: float) -> np.ndarray:
        """Just below the k-th lowest resampled defect, midway to the next lower score."""
        goods, bads = self.good[self.good_idx], self.bad[self.bad_idx]
        k = min(int(np.floor((1.0 - recall) * self.bad.size + 1e-9)), self.bad.size - 1)
        must_catch = bads[:, k]
        lower = np.maximum(_largest_below(goods, must_catch), _largest_below(bads, must_catch))
        lower = np.where(np.isfinite(lower), lower, must_catch - 1.0)
        return _between(lower, must_catch)

    def _scan(self, policy: Policy) -> np.ndarray:
        """f1 / youden / cost: the best cut between consecutive distinct resampled scores.

        The cuts are scanned on the grid of the calibration set's distinct scores. A score
        missing from a resample leaves the objective equal on both sides of it, so the first
        best grid cut is also the resample's first best cut, and the grid score just below it
        is in the resample; the threshold is then midway to the next resampled score, exactly
        as choose_threshold computes it on the resample."""
        uniq = np.unique(np.r_[self.good, self.bad])
        n_boot, n_uniq = self.n_boot, uniq.size
        rows = np.arange(n_boot)

        def counts(pool: np.ndarray, idx: np.ndarray) -> np.ndarray:
            cell = np.searchsorted(uniq, pool)[idx] + rows[:, None] * n_uniq
            return np.bincount(cell.ravel(), minlength=n_boot * n_uniq).reshape(n_boot, n_uniq)

        n_g, n_d = self.good.size, self.bad.size
        good_c, bad_c = counts(self.good, self.good_idx), counts(self.bad, self.bad_idx)
        # Cut j: scores on grid cells ≥ j are NG. fn = defects on cells < j; fp = goods on ≥ j.
        fn = np.cumsum(bad_c, axis=1) - bad_c
        fp = n_g - (np.cumsum(good_c, axis=1) - good_c)
        tp = n_d - fn
        if policy.name == "f1":
            objective = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
        elif policy.name == "youden":
            objective = tp / n_d - fp / n_g
        elif policy.name == "cost":
            objective = -(policy.value * fn + fp)
        else:
            raise ValueError(f"no vectorized threshold for policy {policy}")
        goods, bads = self.good[self.good_idx], self.bad[self.bad_idx]
        top = np.searchsorted(uniq, np.maximum(goods[:, -1], bads[:, -1]))
        # Cuts above every resampled score (all OK) are not candidates, as in choose_threshold.
        objective = np.where(np.arange(n_uniq) <= top[:, None], objective, -np.inf)
        best = np.argmax(objective, axis=1)
        upper = np.minimum(_smallest_from(goods, uniq[best]), _smallest_from(bads, uniq[best]))
        below = uniq[np.maximum(best - 1, 0)]
        return np.where(best > 0, (below + upper) / 2.0, upper - 1.0)


def _smallest_from(sorted_rows: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Per row, the smallest value at or above that row's limit (+inf when none)."""
    n_below = (sorted_rows < limit[:, None]).sum(axis=1)
    last = sorted_rows.shape[1] - 1
    picked = sorted_rows[np.arange(sorted_rows.shape[0]), np.minimum(n_below, last)]
    return np.where(n_below <= last, picked, np.inf)


def _largest_below(sorted_rows: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Per row, the largest value strictly below that row's limit (−inf when none)."""
    n_below = (sorted_rows < limit[:, None]).sum(axis=1)
    picked = sorted_rows[np.arange(sorted_rows.shape[0]), np.maximum(n_below - 1, 0)]
    return np.where(n_below > 0, picked, -np.inf)


def _between(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Vectorized calibration._between: the midpoint, or the float just below `upper`."""
    mid = (lower + upper) / 2.0
    return np.where(mid < upper, mid, np.nextafter(upper, -np.inf))
