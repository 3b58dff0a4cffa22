"""Thresholds that hold on small calibration sets: the cost and capped policies by hand, the
vectorized bootstrap against the plain policy, and calibrate()'s interval and rate ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.calibration import (
    DEFAULT_POLICY,
    Calibration,
    Policy,
    calibrate,
    choose_threshold,
)
from edge_runtime.errors import BadInput
from edge_runtime.threshold_interval import Resamples

# Hand-made, as in test_train_scoring: goods 0.1 0.2 0.3 0.45, defects 0.4 0.6 0.7 0.8 0.9.
SCORES = np.array([0.1, 0.2, 0.3, 0.45, 0.4, 0.6, 0.7, 0.8, 0.9])
DEFECT = np.array([False] * 4 + [True] * 5)
# The same with one defect scoring inside the good cluster (0.05), as an unseen defect kind does.
SCORES_UNSEEN = np.r_[SCORES, 0.05]
DEFECT_UNSEEN = np.r_[DEFECT, True]


@pytest.mark.parametrize(
    ("scores", "is_defect", "policy", "expected"),
    [
        # Cost = C·escapes + overkills per cut: 0.35 → 0·C + 1 (0.45 rejected);
        # 0.525 → 1·C + 0 (0.4 escapes); every other cut costs more.
        (SCORES, DEFECT, "cost:10", 0.35),
        (SCORES, DEFECT, "cost:0.5", 0.525),
        # C = 1: both cost 1; the tie goes to the lower cut, the one with fewer escapes.
        (SCORES, DEFECT, "cost:1", 0.35),
        # Cap not binding: recall gives 0.35; good quantile 0.7 = 0.3 + 0.1·0.15 = 0.315.
        (SCORES, DEFECT, "recall:0.99,max-overkill:0.3", 0.35),
        # recall:0.99 must catch 0.05; nothing scores lower, so it goes midway to 0.05 − 1:
        # every good part rejected.
        (SCORES_UNSEEN, DEFECT_UNSEEN, "recall:0.99", -0.45),
        # Capped at 25 % overkill: good quantile 0.75 = 0.3 + 0.25·(0.45 − 0.3) = 0.3375.
        (SCORES_UNSEEN, DEFECT_UNSEEN, "recall:0.99,max-overkill:0.25", 0.3375),
        # Cost with the unseen defect: catching it rejects all 4 goods (cost 4); letting it
        # escape at 0.35 costs C + 1. cost:10 catches it (0.05 − 1), cost:2 lets it go.
        (SCORES_UNSEEN, DEFECT_UNSEEN, "cost:10", -0.95),
        (SCORES_UNSEEN, DEFECT_UNSEEN, "cost:2", 0.35),
    ],
)
def test_new_policies_by_hand(scores, is_defect, policy, expected):
    assert choose_threshold(scores, is_defect, Policy.parse(policy)) == pytest.approx(expected)


def test_policy_text_round_trips_and_old_strings_still_parse():
    for text in ("recall:0.99", "f1", "youden", "good-quantile:0.995", "cost:10"):
        assert str(Policy.parse(text)) == text
    assert str(Policy.parse(DEFAULT_POLICY)) == DEFAULT_POLICY
    capped = Policy.parse("recall:0.99,max-overkill:0.03")
    assert (capped.name, capped.value, capped.max_overkill) == ("recall", 0.99, 0.03)
    assert Policy.parse("cost").value == 10.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cost:-1", "escape cost must be a positive number"),
        ("cost:nan", "escape cost must be a positive number"),
        ("recall:0.99,max-overkill:1.5", r"max-overkill must be in \(0, 1\)"),
        ("recall:0.99,max-overkill:x", "'x' is not a number"),
        ("good-quantile:0.99,max-overkill:0.03", "good-quantile already fixes the overkill"),
        ("recall:0.99,min-recall:0.5", "the only modifier is ',max-overkill:X'"),
    ],
)
def test_bad_policy_text_is_one_clear_line(text, message):
    with pytest.raises(BadInput, match=message):
        Policy.parse(text)


ALL_POLICIES = [
    "recall:0.99",
    "recall:0.8",
    "f1",
    "youden",
    "good-quantile:0.9",
    "cost:10",
    "cost:0.5",
    "recall:0.99,max-overkill:0.1",
    "cost:10,max-overkill:0.05",
    "youden,max-overkill:0.2",
]


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_vectorized_bootstrap_equals_the_policy_on_each_resample(policy):
    """Scores rounded to 2 decimals, so resamples are full of ties and missing values."""
    pol = Policy.parse(policy)
    rng = np.random.default_rng(3)
    for trial in range(6):
        n_good, n_bad = int(rng.integers(3, 40)), int(rng.integers(1, 20))
        good = np.sort(np.round(rng.lognormal(np.log(0.07), 0.3, n_good), 2))
        bad = np.sort(np.round(rng.lognormal(np.log(0.2), 0.6, n_bad), 2))
        boot = Resamples.draw(good, bad, 40, np.random.default_rng(trial))
        y = np.r_[np.zeros(n_good, bool), np.ones(n_bad, bool)]
        expected = [
            choose_threshold(np.r_[good[gi], bad[bi]], y, pol)
            for gi, bi in zip(boot.good_idx, boot.bad_idx, strict=True)
        ]
        np.testing.assert_array_equal(boot.thresholds(pol), expected)


# ----------------------------------------------------------------------- simulated line scores
def line_scores(rng: np.random.Generator, n_good: int, n_defect: int, unseen: float = 0.02):
    """Scores shaped like twinspect's (distance to the good reference): goods a skewed cluster
    near 0.07; defects mostly far above, 13 % faint in the good tail and `unseen` inside the
    good cluster (a defect kind the network does not see)."""
    kind = rng.choice(3, size=n_defect, p=[0.87 - unseen, 0.13, unseen])
    median = np.array([0.40, 0.12, 0.065])[kind]
    spread = np.array([0.45, 0.20, 0.20])[kind]
    good = 0.07 * np.exp(0.22 * rng.standard_normal(n_good))
    bad = median * np.exp(spread * rng.standard_normal(n_defect))
    return np.r_[good, bad], np.r_[np.zeros(n_good, bool), np.ones(n_defect, bool)]


SMALL = line_scores(np.random.default_rng(7), 140, 50, unseen=0.0)


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, "recall:0.99", "cost:10", "f1"])
def test_interval_holds_the_point_and_the_bagged_value(policy):
    cal = calibrate(*SMALL, policy, n_boot=300, seed=1)
    lo, hi = cal.interval
    assert lo <= cal.point <= hi
    assert lo <= cal.value <= hi
    assert lo < hi
    assert (cal.n_good, cal.n_defect, cal.n_boot, cal.policy) == (140, 50, 300, policy)
    assert cal.method == "bagged-bootstrap"


def test_same_seed_same_calibration_other_seed_other_resamples():
    a = calibrate(*SMALL, n_boot=200, seed=5)
    assert a == calibrate(*SMALL, n_boot=200, seed=5)
    b = calibrate(*SMALL, n_boot=200, seed=6)
    assert a.interval != b.interval
    assert a.point == b.point  # the single choice does not depend on the resamples


def test_interval_shrinks_with_more_data():
    rng = np.random.default_rng(11)
    small = calibrate(*line_scores(rng, 140, 50, unseen=0.0), seed=0)
    large = calibrate(*line_scores(rng, 1120, 400, unseen=0.0), seed=0)
    width = lambda c: c.interval[1] - c.interval[0]  # noqa: E731
    assert width(large) < 0.6 * width(small)


def test_rate_ranges_are_rates_and_bracket_the_counted_figures():
    for policy in (DEFAULT_POLICY, "cost:10", "f1", "recall:0.8"):
        cal = calibrate(*SMALL, policy, n_boot=300)
        s, y = SMALL
        assert cal.escape_rate == np.mean(s[y] <= cal.value)
        assert cal.overkill_rate == np.mean(s[~y] > cal.value)
        for rate, (lo, hi) in (
            (cal.escape_rate, cal.escape_range),
            (cal.overkill_rate, cal.overkill_range),
        ):
            assert 0.0 <= lo <= rate <= hi <= 1.0


def test_no_escape_counted_is_not_reported_as_a_certain_zero():
    cal = calibrate(SCORES, DEFECT, "recall:0.99", n_boot=100)
    assert cal.escape_rate == 0.0
    # 0 escapes in 5 defects: the exact binomial 95 % upper bound, 1 − 0.025^(1/5) ≈ 52 %.
    assert cal.escape_range == (0.0, pytest.approx(1 - 0.025 ** (1 / 5)))


def test_good_quantile_calibrates_without_defects():
    good = SMALL[0][~SMALL[1]]
    cal = calibrate(good, np.zeros(good.size, bool), "good-quantile:0.99", n_boot=100)
    assert cal.escape_rate is None and cal.escape_range is None and cal.n_defect == 0
    assert 0.0 <= cal.overkill_range[0] <= cal.overkill_rate <= cal.overkill_range[1]
    assert "expected escape not measured" in cal.lines()[1]


def test_to_dict_is_json_and_lines_read_like_the_report():
    cal = calibrate(*SMALL, n_boot=100)
    back = json.loads(json.dumps(cal.to_dict()))
    assert back["value"] == cal.value and back["interval"] == list(cal.interval)
    assert back["policy"] == DEFAULT_POLICY
    fixed = Calibration(
        value=0.1081,
        point=0.1093,
        interval=(0.0971, 0.1212),
        escape_rate=0.008,
        escape_range=(0.0, 0.029),
        overkill_rate=0.01,
        overkill_range=(0.002, 0.024),
        n_good=132,
        n_defect=55,
        n_boot=500,
        seed=0,
        policy="recall:0.99,max-overkill:0.03",
        method="bagged-bootstrap",
    )
    assert fixed.lines()[:2] == [
        "threshold 0.1081 (95% interval 0.097–0.121, bootstrap of 187 validation scores)",
        "expected escape 0.8% (0.0–2.9%), overkill 1.0% (0.2–2.4%)",
    ]
    assert "500 resamples of 55 defective and 132 good parts" in fixed.lines()[2]


@pytest.mark.parametrize(
    ("scores", "is_defect", "kwargs", "message"),
    [
        (np.r_[SCORES[:-1], np.nan], DEFECT, {}, "1 of 9 are NaN or infinite"),
        (SCORES, DEFECT[:-1], {}, "8 labels for 9 scores"),
        (SCORES, np.full(9, 2), {}, "booleans or 0/1"),
        (["a"] * 9, DEFECT, {}, "1-D array of numbers"),
        (SCORES, np.zeros(9, bool), {"policy": "recall:0.99"}, "found 9 good, 0 defective"),
        (SCORES, np.zeros(9, bool), {}, "needs good and defective validation images"),
        (SCORES, DEFECT, {"n_boot": 0}, "n_boot of at least 1 resample, got 0"),
        (SCORES, DEFECT, {"n_boot": 2.5}, "n_boot of at least 1"),
        (SCORES, DEFECT, {"seed": -1}, "seed must be a non-negative integer"),
        (SCORES, DEFECT, {"policy": "precision:0.9"}, "unknown threshold policy"),
        (SCORES, DEFECT, {"policy": None}, "must be a policy text"),
    ],
)
def test_bad_input_is_one_clear_line(scores, is_defect, kwargs, message):
    with pytest.raises(BadInput, match=message):
        calibrate(scores, is_defect, **kwargs)


def test_nan_scores_are_refused_by_the_plain_policy_too():
    with pytest.raises(BadInput, match="NaN or infinite"):
        choose_threshold(np.r_[SCORES[:-1], np.inf], DEFECT, Policy.parse("f1"))


def test_default_holds_where_recall_099_swings():
    """Small sets with a rare unseen defect kind (2 % of defects, inside the good cluster):
    recall:0.99 must catch the lowest validation defect, so its threshold falls into the good
    cluster whenever one is drawn. Across 30 calibration sets the default's threshold moves far
    less, in score units and above all in the overkill it means on a large independent sample
    (the good-score scale is where a threshold's move costs)."""
    rng = np.random.default_rng(2024)
    test_s, test_y = line_scores(rng, 20_000, 20_000)
    old, new = [], []
    for _ in range(30):
        s, y = line_scores(rng, int(rng.integers(130, 151)), int(rng.integers(40, 61)))
        old.append(choose_threshold(s, y, Policy.parse("recall:0.99")))
        new.append(calibrate(s, y, n_boot=200).value)
    overkill = np.array([[np.mean(test_s[~test_y] > t) for t in ts] for ts in (old, new)])
    escape = np.array([[np.mean(test_s[test_y] <= t) for t in ts] for ts in (old, new)])
    assert np.std(new) < 0.5 * np.std(old)
    assert overkill[1].std() < 0.1 * overkill[0].std()
    assert overkill[0].max() > 0.5  # recall:0.99 sometimes rejects most good parts...
    assert overkill[1].max() < 0.1  # ...the default never a tenth of them,
    assert escape[1].mean() < 0.08  # for escaping the faint defects it cannot separate
