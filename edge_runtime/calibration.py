"""Threshold policies: where to put the OK/NG line, given validation scores.

A missed defect (escape) costs far more than a rejected good part (overkill), so the default
policy fixes the defect recall (99 %) and takes the threshold that rejects the fewest good
parts, but never rejects more than 3 % of the calibration goods. Without that cap one defect
the network does not see, scoring inside the good cluster, drags the threshold into the good
parts: with ~55 validation defects, recall:0.99 must catch every one of them. `calibrate` adds
the bootstrap: the median threshold over resamples, its 95 % interval and the expected escape
and overkill. The default was chosen by `python -m train.calibration_study`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.evaluation import roc_curve
from edge_runtime.threshold_interval import Resamples

POLICIES = ("recall", "f1", "youden", "good-quantile", "cost")
DEFAULT_POLICY = "recall:0.99,max-overkill:0.03"  # recall:0.99 alone swings on small sets
_DEFAULT_VALUE = {"recall": 0.99, "good-quantile": 0.995, "cost": 10.0}


CAP = "max-overkill"  # optional suffix of any policy that needs defects: ",max-overkill:X"


@dataclass(frozen=True)
class Policy:
    name: str
    value: float | None = None  # recall target, good-score quantile, or escape cost
    max_overkill: float | None = None  # never reject more than this share of calibration goods

    @classmethod
    def parse(cls, text: str) -> Policy:
        """`name[:value][,max-overkill:X]`, e.g. `recall:0.99`, `cost:10,max-overkill:0.03`."""
        head, *mods = str(text).split(",")
        policy = cls._parse_head(head, text)
        if not mods:
            return policy
        key, _, arg = mods[0].partition(":")
        if len(mods) > 1 or key != CAP:
            raise BadInput(f"threshold policy {text!r}: the only modifier is ',{CAP}:X'")
        if not policy.needs_defects:
            raise BadInput(f"threshold policy {text!r}: good-quantile already fixes the overkill")
        cap = _number(arg, text)
        if not 0.0 < cap < 1.0:
            raise BadInput(f"threshold policy {text!r}: {CAP} must be in (0, 1), e.g. 0.03")
        return cls(policy.name, policy.value, cap)

    @classmethod
    def _parse_head(cls, head: str, text: str) -> Policy:
        name, _, arg = head.partition(":")
        if name not in POLICIES:
            raise BadInput(
                f"unknown threshold policy {text!r}; "
                "use cost:C, recall:R, f1, youden or good-quantile:Q"
            )
        if name in ("f1", "youden"):
            if arg:
                raise BadInput(f"threshold policy {name!r} takes no value, got {text!r}")
            return cls(name)
        value = _number(arg, text) if arg else _DEFAULT_VALUE[name]
        if name == "cost":
            if not (np.isfinite(value) and value > 0.0):
                raise BadInput(
                    f"threshold policy {text!r}: the escape cost must be a positive number "
                    "(how many overkills one escape is worth, e.g. cost:10)"
                )
            return cls(name, value)
        if not 0.0 < value <= 1.0:
            raise BadInput(f"threshold policy {text!r}: the value must be in (0, 1]")
        return cls(name, value)

    def __str__(self) -> str:
        text = self.name if self.value is None else f"{self.name}:{self.value:g}"
        return text if self.max_overkill is None else f"{text},{CAP}:{self.max_overkill:g}"

    @property
    def needs_defects(self) -> bool:
        return self.name != "good-quantile"


def _number(arg: str, text: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise BadInput(f"threshold policy {text!r}: {arg!r} is not a number") from None


def _between(lower: float, upper: float) -> float:
    """A threshold strictly below `upper` and at or above `lower`: the midpoint, for margin."""
    mid = (lower + upper) / 2.0
    return mid if mid < upper else float(np.nextafter(upper, -np.inf))


def check_scores(scores, is_defect) -> tuple[np.ndarray, np.ndarray]:
    """Scores as finite float64 and labels as bool, both 1-D and of one length, or BadInput.

    A NaN score would sort last and silently move a threshold, so it is refused here."""
    s = np.asarray(scores, dtype=np.float64) if _numeric(scores) else None
    if s is None or s.ndim != 1:
        raise BadInput("calibration scores must be a 1-D array of numbers")
    y = np.asarray(is_defect)
    if y.shape != s.shape:
        raise BadInput(
            f"calibration labels: {y.size} labels for {s.size} scores (need one per score)"
        )
    if y.dtype != bool:
        if not (_numeric(y) and np.isin(y, (0, 1)).all()):
            raise BadInput("calibration labels must be booleans or 0/1 (1 = defect)")
        y = y.astype(bool)
    bad = ~np.isfinite(s)
    if bad.any():
        raise BadInput(f"calibration scores: {int(bad.sum())} of {s.size} are NaN or infinite")
    return s, y


def _numeric(values) -> bool:
    arr = np.asarray(values)
    return np.issubdtype(arr.dtype, np.number) or arr.dtype == bool


def choose_threshold(scores: np.ndarray, is_defect: np.ndarray, policy: Policy) -> float:
    """The threshold the policy picks; NG means score > threshold.

    With a max-overkill cap the threshold is never below good-quantile:(1 − cap): one defect
    scoring inside the good cluster cannot drag the line into it."""
    s, y = check_scores(scores, is_defect)
    threshold = float(_uncapped(s, y, policy))
    if policy.max_overkill is None:
        return threshold
    return max(threshold, float(np.quantile(s[~y], 1.0 - policy.max_overkill)))


def _uncapped(s: np.ndarray, y: np.ndarray, policy: Policy) -> float:
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
    # f1 / youden / cost: scan every distinct cut between consecutive sorted scores; the
    # first (lowest) best cut wins a tie, which is the one with fewer escapes.
    uniq = np.unique(s)
    cuts = np.r_[uniq[0] - 1.0, (uniq[:-1] + uniq[1:]) / 2.0]
    ng = s[None, :] > cuts[:, None]
    tp = (ng & y).sum(axis=1)
    fp = (ng & ~y).sum(axis=1)
    fn = y.sum() - tp
    if policy.name == "f1":
        objective = 2 * tp / np.maximum(1, 2 * tp + fp + fn)
    elif policy.name == "youden":
        objective = tp / y.sum() - fp / (~y).sum()
    else:  # cost: C·escapes + overkills, counted on the calibration set
        objective = -(policy.value * fn + fp)
    return float(cuts[int(np.argmax(objective))])


@dataclass(frozen=True)
class Calibration:
    """A threshold with its uncertainty, from a stratified bootstrap of the calibration scores.

    `value` is the threshold to ship; `point` is the policy's single choice on the whole set,
    kept for comparison. The rates are counted at `value` on the calibration set; their ranges
    say how far they could be on another set of parts from the same line. Without defective
    parts (good-quantile) the escape figures are None: nothing measured them."""

    value: float
    point: float
    interval: tuple[float, float]  # 2.5–97.5 % of the bootstrap thresholds
    escape_rate: float | None
    escape_range: tuple[float, float] | None
    overkill_rate: float
    overkill_range: tuple[float, float]
    n_good: int
    n_defect: int
    n_boot: int
    seed: int
    policy: str
    method: str  # how `value` was made from the resamples

    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists), for metrics.json and the sidecar."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def lines(self) -> list[str]:
        """The figures for people, e.g. in a report or at the end of `twinspect train`."""
        lo, hi = _distinct(*self.interval, self.value)
        n = self.n_good + self.n_defect
        o_lo, o_hi = self.overkill_range
        if self.escape_rate is None or self.escape_range is None:
            escape = "expected escape not measured (no defective validation parts)"
        else:
            e_lo, e_hi = self.escape_range
            escape = f"expected escape {self.escape_rate:.1%} ({100 * e_lo:.1f}–{e_hi:.1%})"
        return [
            f"threshold {self.value:.4g} (95% interval {lo}–{hi}, "
            f"bootstrap of {n} validation scores)",
            f"{escape}, overkill {self.overkill_rate:.1%} ({100 * o_lo:.1f}–{o_hi:.1%})",
            f"policy {self.policy}, {self.method}: median of {self.n_boot} resamples of "
            f"{self.n_defect} defective and {self.n_good} good parts (seed {self.seed}; "
            f"chosen once on all of them: {self.point:.4g})",
        ]


def _distinct(lo: float, hi: float, value: float) -> tuple[str, str]:
    """Both ends with one decimal fewer than `value` shows at 4 significant digits (0.1081 →
    0.097–0.121), more if that would print them the same."""
    magnitude = int(np.floor(np.log10(abs(value)))) if value else 0
    base = max(0, 2 - magnitude)
    for decimals in range(base, base + 6) if lo != hi else ():
        if f"{lo:.{decimals}f}" != f"{hi:.{decimals}f}":
            base = decimals
            break
    return f"{lo:.{base}f}", f"{hi:.{base}f}"


def calibrate(
    scores: np.ndarray,
    is_defect: np.ndarray,
    policy: str | Policy = DEFAULT_POLICY,
    n_boot: int = 500,
    seed: int = 0,
) -> Calibration:
    """The policy's threshold made steady by bagging, with its 95% bootstrap interval.

    Goods and defects are resampled separately, each at its own count, `n_boot` times, and the
    policy is re-chosen on every resample. The median of those thresholds is the value: on
    simulated small sets it kept the escape of the single choice with a tighter accuracy spread
    (`python -m train.calibration_study`). Same inputs and seed, same result."""
    pol = Policy.parse(policy) if isinstance(policy, str) else policy
    if not isinstance(pol, Policy):
        raise BadInput(f"calibration policy must be a policy text such as {DEFAULT_POLICY!r}")
    if not _is_int(n_boot) or n_boot < 1:
        raise BadInput(f"calibration needs n_boot of at least 1 resample, got {n_boot!r}")
    if not _is_int(seed) or seed < 0:
        raise BadInput(f"calibration seed must be a non-negative integer, got {seed!r}")
    s, y = check_scores(scores, is_defect)
    point = choose_threshold(s, y, pol)  # BadInput if the policy lacks goods or defects
    good, bad = np.sort(s[~y]), np.sort(s[y])
    boot = Resamples.draw(good, bad, int(n_boot), np.random.default_rng(int(seed)))
    thresholds = boot.thresholds(pol)
    value = float(np.median(thresholds))
    lo, hi = np.percentile(thresholds, [2.5, 97.5])
    escape, overkill = boot.rates_at(value)
    n_escaped, n_rejected = int(np.sum(bad <= value)), int(np.sum(good > value))
    return Calibration(
        value=value,
        point=point,
        interval=(float(lo), float(hi)),
        escape_rate=n_escaped / bad.size if bad.size else None,
        escape_range=_rate_range(escape, n_escaped, bad.size) if bad.size else None,
        overkill_rate=n_rejected / good.size,
        overkill_range=_rate_range(overkill, n_rejected, good.size),
        n_good=int(good.size),
        n_defect=int(bad.size),
        n_boot=int(n_boot),
        seed=int(seed),
        policy=str(pol),
        method="bagged-bootstrap",
    )


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _rate_range(boot_rates: np.ndarray, count: int, n: int) -> tuple[float, float]:
    """2.5–97.5 % of a rate over the resamples, at the shipped threshold.

    With no errors of the kind (or nothing but), every resample has the same rate and the
    bootstrap would claim certainty: 0 escapes in 55 defects is not a 0 % escape rate. That
    side then takes the exact binomial (Clopper–Pearson) 95 % bound instead. The range always
    holds the counted rate."""
    lo, hi = (float(v) for v in np.percentile(boot_rates, [2.5, 97.5]))
    if count == 0:
        hi = max(hi, 1.0 - 0.025 ** (1.0 / n))
    if count == n:
        lo = min(lo, 0.025 ** (1.0 / n))
    rate = count / n
    return (min(lo, rate), max(hi, rate))


__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "Calibration",
    "Policy",
    "calibrate",
    "check_scores",
    "choose_threshold",
    "roc_curve",
]
