"""Detection figures from scores: AUROC, confusion at a threshold, escape and overkill rates.

Pure numpy so the line PC can evaluate a model on recorded data without the training stack.
Convention everywhere: positive = defect; NG when score > threshold.
  escape rate   = defects judged OK / defects   (the costly mistake)
  overkill rate = good parts judged NG / good parts
"""

from __future__ import annotations

from collections.abc import Container

import numpy as np
from scipy.stats import rankdata


def auroc(scores: np.ndarray, is_defect: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U, ties counted half); NaN with one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_defect, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, is_defect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, for plotting."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_defect, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / max(1, y.sum())]
    fpr = np.r_[0.0, fp / max(1, (~y).sum())]
    return fpr, tpr


def at_threshold(scores: np.ndarray, is_defect: np.ndarray, threshold: float) -> dict:
    """Confusion counts and rates when parts scoring above `threshold` are NG."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_defect, dtype=bool)
    ng = s > threshold
    tp = int(np.sum(ng & y))
    fn = int(np.sum(~ng & y))
    fp = int(np.sum(ng & ~y))
    tn = int(np.sum(~ng & ~y))
    n = tp + fn + fp + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / n if n else float("nan"),
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "escape_rate": fn / (tp + fn) if tp + fn else 0.0,
        "overkill_rate": fp / (fp + tn) if fp + tn else 0.0,
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
    }


def report(scores: np.ndarray, labels: list[str], threshold: float) -> dict:
    """Everything a quality engineer asks about one scored set, with per-defect-label figures.

    Labels are strings, "0" meaning good. Per defect label: AUROC of good vs that label and the
    escape rate of that label at the threshold.
    """
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    y = lab != "0"
    out = {
        "n": len(s),
        "n_good": int((~y).sum()),
        "n_defect": int(y.sum()),
        "auroc": auroc(s, y),
        **at_threshold(s, y, threshold),
        "per_label": {},
    }
    for name in sorted(set(lab[y].tolist())):
        sel = lab == name
        keep = sel | ~y
        caught = int(np.sum(s[sel] > threshold))
        out["per_label"][name] = {
            "n": int(sel.sum()),
            "auroc": auroc(s[keep], sel[keep]),
            "escape_rate": 1.0 - caught / int(sel.sum()),
        }
    return out


def verdicts_by_label(
    labels: list[str],
    verdicts: list[str],
    nearest: list[str | None],
    known: Container[str],
) -> dict:
    """The line's verdicts counted per true label: how often each kind of part passes, is
    rejected as a known type (NG) or as a kind like none of them (NOVEL), and — for labels that
    are known types — how many rejected parts were named after the right type.

    Detection figures say whether a part is rejected; a line engineer also acts on *what* it is
    called, and a held-out or new defect kind should come out NOVEL. named_right is None for a
    label that is no known type (good parts, held-out kinds): there is no right name to hit.
    """
    out: dict[str, dict] = {}
    for label in sorted(set(labels)):
        is_known = label in known
        out[label] = {"n": 0, "OK": 0, "NG": 0, "NOVEL": 0, "named_right": 0 if is_known else None}
        out[label]["known"] = is_known
    for label, verdict, near in zip(labels, verdicts, nearest, strict=True):
        row = out[label]
        row["n"] += 1
        row[verdict] += 1
        if row["known"] and verdict in ("NG", "NOVEL") and near == label:
            row["named_right"] += 1
    return out
