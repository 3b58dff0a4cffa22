"""What a proposed threshold would do, before anyone signs it off.

Two estimates, because neither is enough alone:
- **calibration** — the labelled validation scores the threshold was calibrated on (a training
  run folder's `validation.npz`, given with `--run`): escape (defects at or under the
  threshold) and overkill (good parts over it), counted exactly at the proposed value. Without
  them, the sidecar's `threshold.calibration` still says what was expected at the calibrated
  value, but nothing can be counted at another value, and the page says so.
- **this run** — the recent scores of this very line (unlabelled: the line does not know which
  parts were really defective): how many of the last parts would have been rejected, and how
  many would change verdict — parts now passed that would be rejected (overkill, if they are
  good), and parts now rejected that would pass (escapes, if they are defective). This is the
  line as it is today, which validation images taken months ago may no longer be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.datasets import GOOD_NAMES
from edge_runtime.errors import BadInput


@dataclass(frozen=True)
class Validation:
    """Labelled calibration scores (a training run's validation.npz)."""

    scores: np.ndarray
    is_defect: np.ndarray
    source: str

    @classmethod
    def load(cls, run_dir: Path) -> Validation:
        path = Path(run_dir) / "validation.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                scores = np.asarray(z["scores"], dtype=np.float64)
                labels = np.asarray(z["labels"]).astype(str)
        except FileNotFoundError:
            raise BadInput(f"--run {run_dir}: no validation.npz (a training run?)") from None
        except (OSError, ValueError, KeyError) as e:
            raise BadInput(f"{path}: not readable validation scores ({e})") from None
        if scores.shape != labels.shape or scores.ndim != 1 or not np.isfinite(scores).all():
            raise BadInput(f"{path}: scores and labels must be one finite score per label")
        is_defect = np.array([lab.strip().lower() not in GOOD_NAMES for lab in labels])
        return cls(scores, is_defect, str(path))

    def at(self, t: float) -> dict:
        good, bad = self.scores[~self.is_defect], self.scores[self.is_defect]
        escaped, rejected = int(np.sum(bad <= t)), int(np.sum(good > t))
        return {
            "escape_rate": escaped / bad.size if bad.size else None,
            "overkill_rate": rejected / good.size if good.size else None,
            "escaped": escaped,
            "rejected_good": rejected,
            "n_defect": int(bad.size),
            "n_good": int(good.size),
        }


def preview(
    proposed: float,
    current: float,
    validation: Validation | None,
    calibration: dict,
    recent: list[float],
) -> dict:
    """Both estimates at `proposed`, beside the same at `current` (see the module doc)."""
    out: dict = {"threshold": proposed, "current": current}
    if validation is not None:
        out["calibration"] = {
            "source": validation.source,
            "at_proposed": validation.at(proposed),
            "at_current": validation.at(current),
        }
    else:
        out["calibration"] = {
            "source": "the sidecar's threshold.calibration (no --run: scores not at hand)",
            "at_calibrated": {
                k: calibration.get(k)
                for k in ("value", "escape_rate", "escape_range", "overkill_rate", "overkill_range")
            }
            if calibration
            else None,
            "note": "escape and overkill at another threshold need the validation scores: "
            "give 'twinspect serve --run RUN' (the training run folder)",
        }
    s = np.asarray(recent, dtype=np.float64)
    out["recent"] = {
        "n": int(s.size),
        "rejected_now": int(np.sum(s > current)),
        "rejected_at_proposed": int(np.sum(s > proposed)),
        "passed_now_rejected_then": int(np.sum((s <= current) & (s > proposed))),
        "rejected_now_passed_then": int(np.sum((s > current) & (s <= proposed))),
    }
    return out
