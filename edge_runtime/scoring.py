"""The one scoring implementation: distance from part embeddings to the good-part reference.

Used by training (calibration, reports), export (parity check) and the line. A larger score
means further from a good part; a part is NG when its score is above the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.preprocess import InputSpec
from edge_runtime.residual import Residual

METRICS = ("minkowski", "chebyshev", "cityblock", "euclidean", "mahalanobis", "knn")
KNN_BANK = 512  # good embeddings kept for knn (a greedy coreset of the good training parts)
KNN_K = 3


@dataclass(frozen=True)
class Metric:
    """A distance and its parameters, as stored in the sidecar."""

    name: str = "minkowski"
    p: float = 4.0  # Minkowski order; the reference notebook used 4
    inv_cov: np.ndarray | None = None  # Mahalanobis only: inverse (shrunk) covariance, D×D
    # knn only: M×D embeddings of good parts; the score is the mean Euclidean distance to the
    # k nearest of them — a part near *some* good part is good, which a mean vector cannot say
    # when good parts vary in several ways (lighting, grain direction, …)
    bank: np.ndarray | None = None
    k: int = KNN_K

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise BadInput(f"unknown metric {self.name!r}; choose one of {', '.join(METRICS)}")
        if self.name == "minkowski" and not (np.isfinite(self.p) and self.p >= 1):
            raise BadInput(f"Minkowski p must be a finite number ≥ 1, got {self.p}")
        if self.name == "mahalanobis" and self.inv_cov is None:
            raise BadInput("the mahalanobis metric needs an inverse covariance matrix")
        if self.name == "knn" and (self.bank is None or not 1 <= self.k <= len(self.bank)):
            raise BadInput("the knn metric needs a bank of good embeddings and 1 ≤ k ≤ its size")

    def to_dict(self) -> dict:
        d: dict = {"name": self.name}
        if self.name == "minkowski":
            d["p"] = float(self.p)
        if self.name == "mahalanobis":
            d["inv_cov"] = np.asarray(self.inv_cov, dtype=float).tolist()
        if self.name == "knn":
            d["k"] = int(self.k)
            d["bank"] = np.asarray(self.bank, dtype=float).round(6).tolist()
        return d


def distances(embeddings: np.ndarray, reference: np.ndarray, metric: Metric) -> np.ndarray:
    """Scores (float64, one per row) of N×D embeddings against a D-vector reference (knn: its
    bank of good embeddings instead)."""
    if metric.name == "knn":
        return knn_distances(embeddings, np.asarray(metric.bank, dtype=np.float64), metric.k)
    diff = np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) - np.asarray(
        reference, dtype=np.float64
    )
    name = metric.name
    if name == "euclidean":
        return np.sqrt(np.einsum("ij,ij->i", diff, diff))
    if name == "cityblock":
        return np.abs(diff).sum(axis=1)
    if name == "chebyshev":
        return np.abs(diff).max(axis=1)
    if name == "minkowski":
        p = float(metric.p)
        a = np.abs(diff)
        if p == 4.0:  # the default: two squarings beat a general power by ~5× on one part
            a = a * a
            return np.sqrt(np.sqrt((a * a).sum(axis=1)))
        return (a**p).sum(axis=1) ** (1.0 / p)
    # mahalanobis: sqrt(dᵀ VI d); clip tiny negatives from rounding before the root
    q = np.einsum("ij,jk,ik->i", diff, np.asarray(metric.inv_cov, dtype=np.float64), diff)
    return np.sqrt(np.maximum(q, 0.0))


@dataclass(frozen=True)
class Region:
    """Where one known defect kind sits in the plane of a fused score's two terms — the twin's
    distance and the pixel residual, each in its spread (`fusion_terms`) — on a log scale: the
    mean and inverse covariance of that kind's rejected validation parts, and the radius (the
    97.5th percentile of their own distance) inside which a reject looks like it. `label` is
    the kind's; None for a region over several kinds (a schema-5 sidecar's one region, or the
    kinds with too few parts for their own)."""

    center: np.ndarray  # (2,) mean of log(terms)
    inv_cov: np.ndarray  # (2, 2)
    radius: float
    n: int
    label: str | None = None

    def __post_init__(self) -> None:
        c, ic = np.asarray(self.center, float), np.asarray(self.inv_cov, float)
        if (
            c.shape != (2,)
            or ic.shape != (2, 2)
            or not (np.all(np.isfinite(c)) and np.all(np.isfinite(ic)))
        ):
            raise BadInput("novelty needs a 2-value center and a 2×2 inv_cov of finite numbers")
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise BadInput(f"novelty radius must be a positive finite number, got {self.radius}")

    def distance(self, terms: np.ndarray) -> np.ndarray:
        """Each row's distance from this region, in radii (> 1: outside)."""
        return Novelty((self,)).distance(terms)

    def to_dict(self) -> dict:
        d = {
            "center": [float(v) for v in self.center],
            "inv_cov": [[float(v) for v in row] for row in self.inv_cov],
            "radius": float(self.radius),
            "n": int(self.n),
        }
        return d if self.label is None else {"label": self.label, **d}


@dataclass(frozen=True)
class Novelty:
    """Where the known defect kinds sit in the plane of a fused score's two terms: one Region
    per kind. A reject inside none of them is NOVEL.

    Why this plane: the twin learns the kinds it is shown, the residual none of them, so a known
    kind comes with the twin's term in its usual proportion to the residual's, and a kind the
    twin was never shown comes with too little of it (or an unusual mix).

    Why a region per kind: the kinds sit apart in the plane, and one ellipse around all of them
    also covers the gaps between them, where an unseen kind can land. Measured post hoc on the
    default line's five held-out-type networks (NOVEL share of the held-out type's rejects, mean
    and worst type / of the known types' rejects, mean and worst): one region 95% and 86% / 3.3%
    and 4.1%; a region per kind 97% and 94% / 2.5% and 3.8%. Per-type Mahalanobis regions in
    embedding space gave 17% / 4.6% (three types 0%)."""

    regions: tuple[Region, ...]

    def __post_init__(self) -> None:
        if not self.regions:
            raise BadInput("novelty needs at least one region")
        # the regions stacked once: one pass over K regions costs what one region did on the
        # line (a loop over five added ~30 µs a part in numpy call overhead)
        stack = {
            "_centers": np.array([r.center for r in self.regions], np.float64),
            "_inv_covs": np.array([r.inv_cov for r in self.regions], np.float64),
            "_radii": np.array([r.radius for r in self.regions], np.float64),
        }
        for k, v in stack.items():
            object.__setattr__(self, k, v)

    def distance(self, terms: np.ndarray) -> np.ndarray:
        """Each row's distance from the nearest known kind's region, in radii (> 1: NOVEL)."""
        z = np.log(np.maximum(np.atleast_2d(np.asarray(terms, np.float64)), 1e-9))
        d = z[:, None, :] - self._centers  # N×K×2
        q = np.einsum("nki,kij,nkj->nk", d, self._inv_covs, d)
        return (np.sqrt(np.maximum(q, 0.0)) / self._radii).min(axis=1)

    def to_dict(self) -> dict:
        return {"regions": [r.to_dict() for r in self.regions]}


MIN_NOVELTY_PARTS = 10  # rejected known defects needed to place a region


def fit_region(terms: np.ndarray, label: str | None, quantile: float) -> Region | None:
    """One kind's region from its parts' terms (N×2); None with fewer than MIN_NOVELTY_PARTS
    or a degenerate spread."""
    t = np.asarray(terms, np.float64)
    if t.ndim != 2 or t.shape[1] != 2 or len(t) < MIN_NOVELTY_PARTS:
        return None
    z = np.log(np.maximum(t, 1e-9))
    cov = np.cov(z.T)
    if not np.all(np.isfinite(cov)) or np.linalg.det(cov) <= 1e-12:
        return None
    center, inv_cov = z.mean(axis=0), np.linalg.inv(cov)
    d = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z - center, inv_cov, z - center), 0.0))
    radius = float(np.quantile(d, quantile))
    return Region(center, inv_cov, radius, len(t), label) if radius > 0 else None


def fit_novelty(
    known_terms: np.ndarray, labels: np.ndarray | None = None, quantile: float = 0.975
) -> Novelty | None:
    """The known kinds' regions from their rejected parts' terms (N×2) and kinds (`labels`):
    a region per kind with enough parts; the kinds left without one share a region over all
    the parts, widened to hold every one of theirs, so no known kind is NOVEL for lack of
    parts. None when not even that can be placed (the prototypes decide NOVEL then)."""
    t = np.asarray(known_terms, np.float64)
    named = labels is not None
    labels = np.asarray(labels).astype(str) if named else np.full(len(t), "")
    kinds = sorted(set(labels.tolist()))
    own = {k: fit_region(t[labels == k], k if named else None, quantile) for k in kinds}
    regions = [r for r in own.values() if r is not None]
    left = np.isin(labels, [k for k, r in own.items() if r is None])
    if left.any():  # one region over all the parts, wide enough for every part left without
        pooled = fit_region(t, None, quantile)
        if pooled is not None:
            reach = float(pooled.distance(t[left]).max())
            regions.append(replace(pooled, radius=pooled.radius * max(reach, 1.0)))
    return Novelty(tuple(regions)) if regions else None


@dataclass(frozen=True)
class Fusion:
    """The embedding's distance plus the local pixel residual (edge_runtime.residual), each
    divided by its spread over good validation parts (99th percentile − median) so that neither
    wins by its units: a part is as far from good as the sum of how unusual it is in each.

    Sum, not max: on the default line's held-out types the two ranked parts within 0.0003 of each
    other (scratch experiments), and a sum keeps one smooth score for the threshold and the
    heatmap's occlusion to work on."""

    residual: Residual
    embedding_scale: float
    residual_scale: float
    novelty: Novelty | None = None  # schema 6 (5: one region): where known kinds sit in the plane

    def __post_init__(self) -> None:
        for name in ("embedding_scale", "residual_scale"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise BadInput(f"fusion {name} must be a positive finite number, got {v}")

    def to_dict(self) -> dict:
        d = {
            "embedding_scale": float(self.embedding_scale),
            "residual_scale": float(self.residual_scale),
            "residual": self.residual.to_dict(),
        }
        if self.novelty is not None:
            d["novelty"] = self.novelty.to_dict()
        return d


def spread(good_scores: np.ndarray) -> float:
    """99th percentile − median of good parts' scores: the unit a Fusion term is counted in
    (never 0, so identical good scores cannot divide by zero)."""
    g = np.asarray(good_scores, dtype=np.float64)
    s = float(np.quantile(g, 0.99) - np.median(g))
    return s if s > 0 else float(max(np.abs(g).max(), 1e-12))


def fusion_terms(
    embeddings: np.ndarray,
    tensors: np.ndarray | None,
    reference: np.ndarray,
    metric: Metric,
    fusion: Fusion,
    spec: InputSpec,
) -> np.ndarray:
    """N×2: a fused score's two terms, the embedding distance and the pixel residual, each in
    its spread over the good validation parts. Their sum is the score (`part_scores`); where
    they sit against each other says whether a reject is a known kind (`Novelty`)."""
    if tensors is None:
        raise BadInput("this model fuses a pixel residual: scoring needs the model inputs too")
    d = distances(embeddings, reference, metric)
    r = fusion.residual.scores(tensors, spec)
    return np.stack([d / fusion.embedding_scale, r / fusion.residual_scale], axis=1)


def part_scores(
    embeddings: np.ndarray,
    tensors: np.ndarray | None,
    reference: np.ndarray,
    metric: Metric,
    fusion: Fusion | None,
    spec: InputSpec,
) -> np.ndarray:
    """The one score of a part, from its embedding and (with a Fusion) the model input it came
    from. Training, export and the line all score through here."""
    if fusion is None:
        return distances(embeddings, reference, metric)
    return fusion_terms(embeddings, tensors, reference, metric, fusion, spec).sum(axis=1)


@dataclass(frozen=True)
class Prototype:
    """A known defect type in embedding space: the mean embedding of its training parts, its
    shape (the inverse of their Ledoit–Wolf shrunk covariance, schema 3) and the radius — the
    95th percentile of its validation parts' distance — inside which a part looks like that type.
    Without a shape (schema-2 sidecars) the distance is Euclidean."""

    vector: np.ndarray
    radius: float
    n: int
    inv_cov: np.ndarray | None = None

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row to the type's centre (Euclidean without a shape)."""
        diff = np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) - self.vector
        if self.inv_cov is None:
            return np.sqrt((diff * diff).sum(axis=1))
        q = np.einsum("ij,jk,ik->i", diff, np.asarray(self.inv_cov, dtype=np.float64), diff)
        return np.sqrt(np.maximum(q, 0.0))

    def to_dict(self) -> dict:
        d = {
            "vector": [round(float(v), 6) for v in self.vector],
            "radius": float(self.radius),
            "n": int(self.n),
        }
        if self.inv_cov is not None:
            d["inv_cov"] = [[float(f"{v:.6g}") for v in row] for row in self.inv_cov]
        return d


def nearest_types(
    embeddings: np.ndarray, prototypes: dict[str, Prototype]
) -> list[tuple[str, float, float]]:
    """(label, distance, novelty) for each row: the known type the part is most like, its
    distance, and the smallest distance/radius over all types. Novelty above 1 means outside
    every type's region — like none of them: NOVEL when the part is also not good.

    With shapes (schema 3) the type is the one with the smallest Mahalanobis distance in radii:
    each type's region follows how its parts actually spread, so a wide type (scratches) no longer
    swallows a kind it was never shown. Measured on one default-line network trained with bent
    tongues held out, the same embeddings judged both ways: rejected bent tongues flagged NOVEL
    0/41 → 36/41, known-type rejects flagged NOVEL 0.6% → 6.8%, named right 72% → 98%
    (`twinspect eval` prints these per label, "verdicts by label"). Without shapes the
    nearest Euclidean centre names the type (by radii there the widest type claimed almost every
    part)."""
    if not prototypes:
        return []
    labels = list(prototypes)
    protos = [prototypes[k] for k in labels]
    radii = np.array([p.radius for p in protos], dtype=np.float64)
    d = np.stack([p.distance(embeddings) for p in protos], axis=1)
    ratio = d / radii[None, :]
    novelty = ratio.min(axis=1)
    shaped = all(p.inv_cov is not None for p in protos)
    best = (ratio if shaped else d).argmin(axis=1)
    return [(labels[b], float(d[i, b]), float(novelty[i])) for i, b in enumerate(best)]


def knn_distances(embeddings: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each row to its k nearest rows of the bank."""
    x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ bank.T + (bank * bank).sum(1)[None, :]
    near = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
    return np.sqrt(near).mean(axis=1)


def coreset(embeddings: np.ndarray, m: int = KNN_BANK, seed: int = 0) -> np.ndarray:
    """Up to m rows chosen greedily so every row is near a chosen one (k-center): keeps the
    rare kinds of good part that a random sample would drop, at a bounded cost per part."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) <= m:
        return x.copy()
    chosen = [int(np.random.default_rng(seed).integers(len(x)))]
    far = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(m - 1):
        i = int(np.argmax(far))
        chosen.append(i)
        far = np.minimum(far, ((x - x[i]) ** 2).sum(1))
    return x[np.sort(chosen)]


def fit_inv_cov(good_embeddings: np.ndarray) -> tuple[np.ndarray, float]:
    """Inverse of a Ledoit–Wolf shrunk covariance of good embeddings, and the shrinkage used.

    With 30 reference images and 128 dimensions the sample covariance is singular; shrinking
    toward a scaled identity keeps it invertible and well conditioned.
    """
    x = np.asarray(good_embeddings, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise BadInput(f"mahalanobis needs at least 2 reference embeddings, got {n}")
    xc = x - x.mean(axis=0)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    target = mu * np.eye(d)
    delta2 = np.sum((s - target) ** 2) / d
    beta2 = sum(np.sum((np.outer(r, r) - s) ** 2) for r in xc) / (n * n * d)
    shrink = 1.0 if delta2 == 0 else float(min(1.0, beta2 / delta2))
    shrink = max(shrink, 1e-3)  # never the raw singular matrix
    cov = (1.0 - shrink) * s + shrink * target
    if mu == 0:
        cov = cov + np.eye(d)  # all references identical: fall back to Euclidean
    return np.linalg.inv(cov), shrink
