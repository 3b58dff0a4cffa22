"""What a line engineer might pick instead of the twin network: pixel baselines (numpy + scipy).

Every baseline has `fit(images, labels)` (uint8 N×H×W, labels as strings, "0" = good) and
`score(images) -> float64` (higher = more defective), so the evidence script calibrates and
evaluates them exactly like twinspect: threshold by the same policy on the same validation split,
figures from `edge_runtime.evaluation`. Nothing here imports TensorFlow:

    python -m train.baselines data/line      # AUROC of each baseline on the test split
    python -m train.baselines data/tile --size 64x64   # images stretched to 64×64 first

  PixelTemplate      mean good image; Minkowski-p distance on raw pixels (the naive check)
  PcaReconstruction  PCA of good images; distance of an image from the PCA subspace
  PcaMahalanobis     PCA of good images; Mahalanobis distance inside the PCA subspace
  LogisticPixels     supervised: L2-regularized logistic regression on pixels, good vs defect
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from edge_runtime.calibration import Policy, choose_threshold
from edge_runtime.errors import BadInput
from edge_runtime.evaluation import auroc, report
from edge_runtime.scoring import Metric, distances

GOOD = "0"


def flat_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 N×H×W → float64 N×(H·W) in 0..1, the scale the twin network sees."""
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise BadInput(f"images must be an N×H×W array, got shape {arr.shape}")
    return arr.reshape(arr.shape[0], -1).astype(np.float64) / 255.0


def _good(images: np.ndarray, labels) -> np.ndarray:
    lab = np.asarray(labels).astype(str)
    x = flat_pixels(images)
    if lab.shape[0] != x.shape[0]:
        raise BadInput(f"{x.shape[0]} images but {lab.shape[0]} labels")
    good = x[lab == GOOD]
    if good.shape[0] < 2:
        raise BadInput(f"need at least 2 good images (label 0) to fit, got {good.shape[0]}")
    return good


@dataclass
class PixelTemplate:
    """Mean good image as the template; Minkowski-p distance of raw pixels (0..1) to it."""

    p: float = 4.0
    name: str = "pixel template"
    template: np.ndarray | None = field(default=None, repr=False)

    def fit(self, images: np.ndarray, labels) -> PixelTemplate:
        self.template = _good(images, labels).mean(axis=0)
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        return distances(flat_pixels(images), self.template, Metric("minkowski", p=self.p))


@dataclass
class _Pca:
    """PCA of good images. `n_components` an int, or a float in (0, 1): the fewest components
    that explain that fraction of the good images' pixel variance."""

    n_components: float = 0.95
    mean: np.ndarray | None = field(default=None, repr=False)
    components: np.ndarray | None = field(default=None, repr=False)  # k×D, orthonormal rows
    variances: np.ndarray | None = field(default=None, repr=False)  # k
    k: int = 0

    def fit(self, images: np.ndarray, labels):
        x = _good(images, labels)
        self.mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        var = s**2 / max(1, x.shape[0] - 1)
        rank = int(np.sum(var > var[0] * 1e-12)) if var.size and var[0] > 0 else 0
        if rank == 0:
            raise BadInput("all good training images are identical; PCA needs variation")
        n = self.n_components
        if isinstance(n, float) and 0.0 < n < 1.0:
            k = int(np.searchsorted(np.cumsum(var) / var.sum(), n) + 1)
        else:
            k = int(n)
        self.k = max(1, min(k, rank))
        self.components = vt[: self.k]
        self.variances = var[: self.k]
        return self

    def _project(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xc = flat_pixels(images) - self.mean
        return xc, xc @ self.components.T


@dataclass
class PcaReconstruction(_Pca):
    """Reconstruction error: Euclidean distance of an image from the good images' PCA subspace."""

    name: str = "PCA reconstruction"

    def score(self, images: np.ndarray) -> np.ndarray:
        xc, z = self._project(images)
        resid = xc - z @ self.components
        return np.sqrt(np.einsum("ij,ij->i", resid, resid))


@dataclass
class PcaMahalanobis(_Pca):
    """Mahalanobis distance inside the PCA subspace (PCA scores are uncorrelated, so it is each
    component divided by its standard deviation)."""

    name: str = "PCA Mahalanobis"

    def score(self, images: np.ndarray) -> np.ndarray:
        _, z = self._project(images)
        return np.sqrt(np.sum(z * z / self.variances, axis=1))


@dataclass
class LogisticPixels:
    """Supervised: logistic regression on standardized pixels, good (0) vs any defect (1).

    Classes are weighted to equal total weight; loss = weighted mean log-loss + l2/2·‖w‖²,
    minimized with L-BFGS. The score is the logit, so higher means more defective.
    """

    l2: float = 1e-3
    max_iter: int = 500
    name: str = "logistic regression (pixels)"
    mean: np.ndarray | None = field(default=None, repr=False)
    scale: np.ndarray | None = field(default=None, repr=False)
    w: np.ndarray | None = field(default=None, repr=False)
    b: float = 0.0

    def fit(self, images: np.ndarray, labels) -> LogisticPixels:
        x = flat_pixels(images)
        y = (np.asarray(labels).astype(str) != GOOD).astype(np.float64)
        if y.shape[0] != x.shape[0]:
            raise BadInput(f"{x.shape[0]} images but {y.shape[0]} labels")
        n_pos, n_neg = int(y.sum()), int((1 - y).sum())
        if n_pos == 0 or n_neg == 0:
            raise BadInput(
                f"logistic regression needs good and defective images, got {n_neg} and {n_pos}"
            )
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-3
        z = (x - self.mean) / self.scale
        sw = np.where(y == 1, 0.5 / n_pos, 0.5 / n_neg)  # sums to 1
        sign = 2 * y - 1  # +1 defect, -1 good
        d = z.shape[1]

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:d], theta[d]
            m = sign * (z @ w + b)  # margin
            loss = np.sum(sw * np.logaddexp(0.0, -m)) + 0.5 * self.l2 * (w @ w)
            g = -sw * sign * np.exp(-np.logaddexp(0.0, m))  # d loss / d logit = -σ(-m)·sign
            return float(loss), np.r_[z.T @ g + self.l2 * w, g.sum()]

        res = minimize(
            loss_grad,
            np.zeros(d + 1),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        self.w, self.b = res.x[:d], float(res.x[d])
        return self

    def score(self, images: np.ndarray) -> np.ndarray:
        z = (flat_pixels(images) - self.mean) / self.scale
        return z @ self.w + self.b


def unsupervised() -> list:
    """The baselines that learn from good images only, with their default settings."""
    return [PixelTemplate(), PcaReconstruction(), PcaMahalanobis()]


def all_baselines() -> list:
    return [*unsupervised(), LogisticPixels()]


def calibrated_report(
    val_scores: np.ndarray,
    val_labels,
    test_scores: np.ndarray,
    test_labels,
    policy: str | Policy = "recall:0.99",
) -> dict:
    """Threshold from the validation scores by `policy`; the full report on the test scores."""
    pol = Policy.parse(policy) if isinstance(policy, str) else policy
    val_lab = np.asarray(val_labels).astype(str)
    threshold = choose_threshold(val_scores, val_lab != GOOD, pol)
    out = report(test_scores, np.asarray(test_labels).astype(str).tolist(), threshold)
    out["policy"] = str(pol)
    out["val_auroc"] = auroc(val_scores, val_lab != GOOD)
    return out


def label_auroc(scores: np.ndarray, labels, label: str) -> float:
    """AUROC of good vs one defect label (other defects left out)."""
    lab = np.asarray(labels).astype(str)
    keep = (lab == GOOD) | (lab == label)
    return auroc(np.asarray(scores)[keep], lab[keep] == label)


def main(argv: list[str] | None = None) -> int:
    """Fit every baseline on the train split, print test AUROCs (overall and per defect)."""
    from edge_runtime.datasets import load_labeled
    from edge_runtime.geometry import parse_input_size
    from edge_runtime.preprocess import InputSpec

    argv = sys.argv[1:] if argv is None else argv
    usage = (
        "usage: python -m train.baselines [DATA_DIR] [--size HxW]   (default data/line; "
        "--size: load images stretched to H×W, e.g. 64x64 for the tile product)"
    )
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    spec = InputSpec()
    if "--size" in argv:
        k = argv.index("--size")
        try:
            size = parse_input_size(argv[k + 1])
            if size is None:
                raise BadInput("auto")
            spec = InputSpec(height=size[0], width=size[1], fit="stretch")
        except (IndexError, BadInput):
            print("error: --size needs HxW in whole pixels, e.g. 64x64", file=sys.stderr)
            return 2
        argv = argv[:k] + argv[k + 2 :]
    if len(argv) > 1:
        print(usage)
        return 2
    path = argv[0] if argv else "data/line"
    try:
        train = load_labeled(path, split="train", spec=spec)
        test = load_labeled(path, split="test", spec=spec)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    test_lab = np.asarray(test.labels).astype(str)
    defects = sorted(set(test_lab.tolist()) - {GOOD})
    print(
        f"{path}: {len(train.labels)} train, {len(test_lab)} test images at "
        f"{spec.height}×{spec.width}; fit on all of train, AUROC on test"
    )
    widths = [max(6, len(d)) for d in defects]
    print(
        f"{'method':<32} {'all':>6} "
        + " ".join(f"{d:>{n}}" for d, n in zip(defects, widths, strict=True))
    )
    for m in all_baselines():
        s = m.fit(train.images, train.labels).score(test.images)
        per = " ".join(
            f"{label_auroc(s, test_lab, d):{n}.3f}" for d, n in zip(defects, widths, strict=True)
        )
        print(f"{m.name:<32} {auroc(s, test_lab != GOOD):6.3f} {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
