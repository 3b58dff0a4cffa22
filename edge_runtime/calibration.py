"""Threshold policies: where to put the OK/NG line, given validation scores.

A missed defect (escape) costs far more than a rejected good part (overkill), so the default
policy fixes the defect recall and takes the threshold that rejects the fewest good parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.evaluation import roc_curve

POLICIES = ("recall", "f1", "youden", "good-quantile")
DEFAULT_POLICY = "recall:0.99"


@dataclass(frozen=True)
class Policy:
    name: str
    value: float | None = None  # recall target, or the good-score quantile

    @classmethod
    def parse(cls, text: str) -> Policy:
        name, _, arg = text.partition(":")
        if name not in POLICIES:
            raise BadInput(
                f"unknown threshold policy {text!r}; use recall:R, f1, youden or good-quantile:Q"
            )
        if name in ("f1", "youden"):
            if arg:
                raise BadInput(f"threshold policy {name!r} takes no value, got {text!r}")
            return cls(name)
        try:
            value = float(arg) if arg else (0.99 if name == "recall" else 0.995)
        except ValueError:
            raise BadInput(f"threshold policy {text!r}: {arg!r} is not a number") from None
        if not 0.0 < value <= 1.0:
            raise BadInput(f"threshold policy {text!r}: the value must be in (0, 1]")
        return cls(name, value)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value:g}"

    @property
    def needs_defects(self) -> bool:
        return self.name != "good-quantile"


def _between(lower: float, upper: float) -> float:
    """A threshold strictly below `upper` and at or above `lower`: the midpoint, for margin."""
    mid = (lower + upper) / 2.0
    return mid if mid < upper else float(np.nextafter(upper, -np.inf))


def choose_threshold(scores: np.ndarray, is_defect: np.ndarray, policy: Policy) -> float:
    """The threshold the policy picks; NG means score > threshold."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_defect, dtype=bool)
    good, bad = np.sort(s[~y]), np.sort(s[y])
    if policy.name == "good-quantile":
        if good.size == 0:
            raise BadInput("good-quantile calibration needs good validation images")
        return float(np.quantile(good, policy.value))
    if good.size == 0 or bad.size == 0:
        raise BadInput(
            f"threshold policy {policy} needs good and defective validation images "
            f"(found {good.size} good, {bad.size} defective); try good-quantile:0.995"
        )
    if policy.name == "recall":
        # Allow at most k escapes; the k-th smallest defect score (0-based) must be caught.
        k = int(np.floor((1.0 - policy.value) * bad.size + 1e-9))
        k = min(k, bad.size - 1)
        must_catch = bad[k]
        below = s[s < must_catch]
        # Largest gap below that defect: midway to the next lower score keeps the same
        # validation verdicts with margin on the defect side.
        return _between(float(below.max()) if below.size else must_catch - 1.0, must_catch)
    # f1 / youden: scan every distinct cut between consecutive sorted scores.
    uniq = np.unique(s)
    cuts = np.r_[uniq[0] - 1.0, (uniq[:-1] + uniq[1:]) / 2.0]
    ng = s[None, :] > cuts[:, None]
    tp = (ng & y).sum(axis=1)
    fp = (ng & ~y).sum(axis=1)
    fn = y.sum() - tp
    if policy.name == "f1":
        objective = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
    else:
        objective = tp / y.sum() - fp / (~y).sum()
    return float(cuts[int(np.argmax(objective))])


__all__ = ["DEFAULT_POLICY", "POLICIES", "Policy", "choose_threshold", "roc_curve"]
