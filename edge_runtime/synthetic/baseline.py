"""The naive baseline that keeps the synthetic line honest: mean good image as a template,
Minkowski distance on raw pixels. If this scores AUROC ≈ 1, the data is too easy to test a model.

    python -m edge_runtime.synthetic.baseline data/line      # overall and per defect type
"""

from __future__ import annotations

import sys

import numpy as np

from edge_runtime.evaluation import auroc
from edge_runtime.scoring import Metric, distances


def template_scores(train_good: np.ndarray, test: np.ndarray, p: float = 4.0) -> np.ndarray:
    """Minkowski-p distance of each test image to the mean good training image (pixels 0..1)."""
    template = train_good.reshape(len(train_good), -1).astype(np.float64).mean(0) / 255.0
    x = test.reshape(len(test), -1).astype(np.float64) / 255.0
    return distances(x, template, Metric("minkowski", p=p))


def template_auroc(
    train_images: np.ndarray,
    train_labels: list[str],
    test_images: np.ndarray,
    test_labels: list[str],
    p: float = 4.0,
    good_label: str = "0",
) -> dict[str, float]:
    """AUROC of the template baseline: {"all": …, "<defect label>": … (that defect vs good)}."""
    train_good = np.asarray(train_images)[np.asarray(train_labels) == good_label]
    scores = template_scores(train_good, np.asarray(test_images), p)
    labels = np.asarray(test_labels)
    good = labels == good_label
    out = {"all": auroc(scores, ~good)}
    for lab in sorted(set(labels[~good].tolist())):
        keep = good | (labels == lab)
        out[lab] = auroc(scores[keep], labels[keep] == lab)
    return out


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.datasets import load_labeled
    from edge_runtime.synthetic.defects import LABEL_NAMES

    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "data/line"
    train = load_labeled(path, split="train")
    test = load_labeled(path, split="test")
    res = template_auroc(train.images, train.labels, test.images, test.labels)
    print(f"template baseline (mean good, Minkowski p=4) on {path}: AUROC {res.pop('all'):.3f}")
    for lab, v in res.items():
        print(f"  {lab} {LABEL_NAMES.get(lab, lab):<18} {v:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
