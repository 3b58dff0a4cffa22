"""`--metric auto` and `--residual auto` (the defaults): what the line scores with — which
distance to the good parts, and whether the local pixel residual is added to it (choose_fusion,
measured there).

Two candidates, both one small computation on the line: Minkowski p=4 to the mean good embedding
(what the contrastive loss shapes for the defect kinds it is shown) and the Mahalanobis distance
under the good embeddings' Ledoit–Wolf shrunk covariance (which also weighs the directions the
training never pulled apart — where a kind nobody has shown the network tends to land).

Measured (`python -m train.score_study`, and the held-out-type runs in BENCHMARKS.md):
- default line, five types each held out in turn (small network, no synthetic anomalies): mean
  AUROC of the unseen type p4 0.947 (worst 0.849) against Mahalanobis 0.988 (worst 0.956); the
  known types 0.9989 vs 0.9985; the default model, every type known: 0.9997 vs 0.9986.
- default line from good parts only: p4 0.967, Mahalanobis 0.989; tile from good parts only:
  p4 0.980, Mahalanobis 0.965.
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
validation AUROC within KNOWN_TOLERANCE of p4's; `--metric mahalanobis` asks for it outright.

A good-only line votes the same way, on its validation goods and their synthetic anomalies
alone. It used to take Mahalanobis without a vote (default line from good parts: 0.989 vs p4's
0.967), but the tile from good parts turned that round: p4 0.980, Mahalanobis 0.965 on the same
network, and the vote picked p4 on both lines (three vote seeds each). On the default line the
pixel residual now decides it anyway: fused, both distances give 0.9997 (post hoc on the same
good-only networks).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.evaluation import auroc
from edge_runtime.preprocess import InputSpec, to_tensor
from edge_runtime.residual import fit_residual
from edge_runtime.scoring import Fusion, Metric, distances, fit_inv_cov, spread

AUTO = "auto"
KNOWN_TOLERANCE = 0.001  # validation AUROC on real defects a challenger score may give up
RESAMPLES = 400  # bootstrap resamples of the validation parts (worse_beyond_noise)


def _label(metric: Metric) -> str:
    return f"minkowski p={metric.p:g}" if metric.name == "minkowski" else metric.name


class VoteSet:
    """The parts a score is chosen on: the validation parts plus a synthetic anomaly of each
    validation good (train/anomalies.py), as model inputs, and their embeddings (made once for
    every choice); `real` marks the validation parts."""

    def __init__(
        self,
        x_val,
        val_is_defect,
        val_good_images,
        spec: InputSpec,
        seed: int,
        embed: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        from train.anomalies import synthesize

        pad = spec.pad_value if spec.pad_mode == "constant" else None
        syn = synthesize(val_good_images, np.random.default_rng(seed), pad_value=pad)
        self.x = np.concatenate([x_val, to_tensor(syn, spec)])
        self.y = np.r_[np.asarray(val_is_defect, dtype=bool), np.ones(len(syn), dtype=bool)]
        self.real = np.arange(len(self.y)) < len(x_val)
        self.good_real = self.real & ~self.y
        self.n_val, self.n_syn = len(x_val), len(syn)
        self.seed = seed
        self.emb = embed(self.x)

    def measure(self, scores: dict[str, np.ndarray]) -> tuple[dict, dict, str]:
        """(AUROC of each candidate on the whole set, on the real parts alone — empty when the
        line has no real defect —, and both as the text train prints)."""
        figures = {k: auroc(v, self.y) for k, v in scores.items()}
        known = (
            {k: auroc(v[self.real], self.y[self.real]) for k, v in scores.items()}
            if self.y[self.real].any()
            else {}
        )
        text = (
            f"AUROC on {self.n_val} validation parts + {self.n_syn} synthetic anomalies of the "
            "validation goods: "
            + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
            + (
                "; on the validation parts alone: "
                + ", ".join(f"{k} {v:.4f}" for k, v in known.items())
                if known
                else ""
            )
        )
        return figures, known, text

    def vote(self, scores: dict[str, np.ndarray], incumbent: str, challenger: str) -> dict:
        """AUROC of each candidate on the whole set and on the real parts alone; the
        challenger wins if it is better on the whole set and keeps the real defects' AUROC
        within KNOWN_TOLERANCE (a line without real defects has nothing to keep)."""
        figures, known, why = self.measure(scores)
        wins = figures[challenger] > figures[incumbent]
        keeps = not known or known[challenger] >= known[incumbent] - KNOWN_TOLERANCE
        chosen = challenger if wins and keeps else incumbent
        return {"chosen": chosen, "why": why, "candidates": figures, "known": known}


def choose_metric(
    good_embeddings: np.ndarray,
    reference: np.ndarray,
    vote: VoteSet,
) -> tuple[Metric, dict]:
    """(the chosen metric, what was measured and why) — the dict goes to metrics.json."""
    maha = Metric("mahalanobis", inv_cov=fit_inv_cov(good_embeddings)[0])
    mink = Metric("minkowski", p=4.0)
    scores = {_label(m): distances(vote.emb, reference, m) for m in (mink, maha)}
    choice = vote.vote(scores, _label(mink), _label(maha))
    return (maha if choice["chosen"] == _label(maha) else mink), choice


RESIDUAL_MODES = (AUTO, "on", "off")


def choose_fusion(
    good_tensors: np.ndarray,
    reference: np.ndarray,
    metric: Metric,
    vote: VoteSet,
    spec: InputSpec,
    mode: str = AUTO,
) -> tuple[Fusion | None, dict]:
    """Whether the line's score adds the local pixel residual (edge_runtime.residual) of the
    good parts' PCA, fitted on `good_tensors` (the good training parts): `on`, `off`, or `auto`.
    Each term is counted in its spread over the validation goods.

    `auto` fuses when the fused score wins the metric's vote (better on validation + synthetic
    anomalies, real defects kept within KNOWN_TOLERANCE) *and* the residual alone separates that
    set at least as well as the embedding alone: a weaker term adds mostly its noise to a sum.
    Measured post hoc on shipped networks (test AUROC, embedding → fused):
    - default line, every type known: 0.9997 → 0.9999 (`make demo` figures, fused by the vote);
      good parts only: 0.989 → 0.9997 (residual alone 0.904 vs embedding 0.854 on the vote set);
    - tile, five seeds: fusing cost 0.001–0.009 on every seed (residual alone 0.82–0.83 vs
      embedding 0.86–0.88: off); seed 3 passed the first two conditions on noise (validation
      0.9871 vs 0.9868) and would have lost 0.003; good parts only: 0.965 → 0.951 (residual alone
      0.806 vs embedding 0.816: off).
    The synthetic anomalies are local pixel corruptions, which favour the residual; that it still
    loses on the tile is what marks a textured product.
    """
    if mode == "off":
        return None, {"chosen": "off", "why": "--residual off", "candidates": {}}
    try:
        residual = fit_residual(good_tensors, spec)
    except BadInput as e:  # too few or identical good parts: `on` says so, `auto` goes without
        if mode == "on":
            raise
        return None, {"chosen": "off", "why": f"no residual: {e}", "candidates": {}}
    d = distances(vote.emb, reference, metric)
    r = residual.scores(vote.x, spec)
    fusion = Fusion(residual, spread(d[vote.good_real]), spread(r[vote.good_real]))
    fused = d / fusion.embedding_scale + r / fusion.residual_scale
    grid = f"{residual.height}×{residual.width} grid, {len(residual.components)} components"
    if mode == "on":
        return fusion, {"chosen": "on", "why": f"--residual on ({grid})", "candidates": {}}
    scores = {"embedding": d, "residual": r, "embedding + residual": fused}
    choice = vote.vote(scores, "embedding", "embedding + residual")
    figures = choice["candidates"]
    strong = figures["residual"] >= figures["embedding"]
    on = choice["chosen"] == "embedding + residual" and strong
    choice["why"] += f" (residual: {grid})" + (
        "" if strong else "; off: the residual alone separates them less well than the embedding"
    )
    choice["chosen"] = "on" if on else "off"
    return (fusion if on else None), choice


VIEW_MODES = (AUTO, 1, 2, 4)
# mirrored good parts must be this hard to tell from good parts (AUROC of their distances) for
# the part to count as looking alike in every mirror: a surface measured 0.46–0.54, the default
# line's terminals 1.000 mirrored left/right
MIRROR_ALIKE = 0.65
MIRRORS = {
    "left/right": lambda t: t[:, :, ::-1],
    "top/bottom": lambda t: t[:, ::-1],
    "both": lambda t: t[:, ::-1, ::-1],
}
# the mirrors each number of views embeds besides the part itself (train.model.MirrorViews)
VIEW_MIRRORS = {2: ("both",), 4: ("left/right", "top/bottom", "both")}


def looks_alike(alike: dict[str, float], views: int) -> bool:
    """Whether the part looks alike in every mirror `views` views embed (mirrored_alike)."""
    return max(alike[k] for k in VIEW_MIRRORS[views]) <= MIRROR_ALIKE


def most_views(alike: dict[str, float]) -> int:
    """The most views whose mirrors all look alike: 4 (a surface), 2 (a part alike only turned
    half a turn: a Z, an S) or 1 (an oriented part)."""
    return next((v for v in (4, 2) if looks_alike(alike, v)), 1)


def worse_beyond_noise(
    base: np.ndarray, other: np.ndarray, y: np.ndarray, seed: int
) -> tuple[bool, float, float]:
    """Whether `other` separates the parts `y` marks worse than `base` by more than which parts
    happened to be drawn explains: (worse, AUROC difference, its 2.5th–97.5th percentile
    half-width over RESAMPLES paired bootstrap resamples, goods and defects drawn apart).
    Worse when even the 97.5th percentile of the difference is below zero.

    Why: a few hundred validation parts cannot resolve 0.001 of AUROC. With 60 defects and 140
    goods one defect passing 20 goods moves it 0.0024; tile seed 1 had 0.9969 with one view and
    0.9942 with four on validation, kept one view by a 0.001 tolerance, and scored 0.978 on
    test where four views gave 0.989–0.995 on every seed measured."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    diff = auroc(other, y) - auroc(base, y)
    d = np.empty(RESAMPLES)
    for k in range(RESAMPLES):
        i = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        d[k] = auroc(other[i], y[i]) - auroc(base[i], y[i])
    lo, hi = np.percentile(d, [2.5, 97.5])
    return bool(hi < 0.0), float(diff), float((hi - lo) / 2)


def mirrored_alike(
    goods: np.ndarray,
    distance: Callable[[np.ndarray], np.ndarray],
    d_goods: np.ndarray | None = None,
) -> dict:
    """For each mirror: the AUROC telling the good parts' distances from their mirror images'
    (0.5: a mirrored good part is as good as any; 1.0: every one is told apart). `d_goods`:
    the goods' own distances when they are already known."""
    d_goods = distance(goods) if d_goods is None else d_goods
    y = np.r_[np.zeros(len(d_goods), bool), np.ones(len(d_goods), bool)]
    return {
        name: auroc(np.r_[d_goods, distance(np.ascontiguousarray(mirror(goods)))], y)
        for name, mirror in MIRRORS.items()
    }


def pixels_alike_mirrored(goods: np.ndarray, seed: int) -> dict[str, float]:
    """Before training: does the part look alike mirrored, in its pixels? Half the good
    training images make a template (their mean); the other half's RMS distances to it are
    told from their mirror images' (mirrored_alike). choose_views reads it first: a part unlike
    its mirrors in its pixels keeps one view without the embedding being asked. The default
    line's terminals: left/right and both ways 1.000 (the ring is on one side); the tile's
    textures: 0.50 for every mirror."""
    x = np.asarray(goods, dtype=np.float32)
    idx = np.random.default_rng(seed).permutation(len(x))
    half = len(x) // 2
    template = x[idx[:half]].mean(axis=0)

    def rms(t: np.ndarray) -> np.ndarray:
        return np.sqrt(np.square(t - template).reshape(len(t), -1).mean(axis=1))

    return mirrored_alike(x[idx[half:]], rms)


def choose_views(
    mode,
    single,
    x_ref: np.ndarray,
    vote: VoteSet,
    embed: Callable[[object, np.ndarray], np.ndarray],
    with_views: Callable[[object, int], object],
    pixels: dict[str, float] | None = None,
) -> tuple[int, dict]:
    """How many views of a part the shipped branch embeds: 1 (the part), 2 (the part and the
    part turned half a turn) or 4 (the part and its three mirror images), side by side
    (train.model.with_views), and why — the dict goes to metrics.json → `views`. `vote` holds
    the single view's embeddings; `pixels` is pixels_alike_mirrored's answer before training,
    when there was one.

    `auto` ships the most views whose mirrors the part looks alike in (most_views) — in its
    pixels before training (`pixels`), and in the trained embedding: the validation goods,
    mirrored, are as close to the reference as they are unmirrored (AUROC of the two sets of
    distances ≤ MIRROR_ALIKE) — when the real validation defects (or, on a good-only line, the
    whole vote set with its synthetic anomalies) do not separate worse with them beyond what
    resampling the validation parts explains (worse_beyond_noise). A mirrored terminal is not a
    terminal (the default line's goods mirrored both ways: AUROC 1.000; with four views its test
    AUROC would fall 0.9997 → 0.89), a surface is (tile: 0.43–0.54), and there the views
    average away what one view of a texture gets wrong.

    Why not ask the validation parts for a gain: 200 of them could not show it. Tile seed 1
    separated its validation parts at 0.9957 with one view and 0.9963 with four, and the earlier
    rule (a gain above 0.001) kept one view: test AUROC 0.9825, where four views give 0.99 on
    every seed (post hoc, docs/architecture-search.md). The synthetic anomalies cannot show it
    either (0.870 → 0.861 on that seed): they are local corruptions one view already sees.
    Why four where they look alike: on the tile with the default commands, five seeds gave
    0.985–0.993 test AUROC with two views (the part and the part turned half a turn) and
    0.988–0.996 with four (BENCHMARKS.md); a narrower branch could not pay for the two extra
    views without losing what they gain (docs/architecture-search.md), static int8 does
    (export --quantize auto)."""
    if mode in (1, 2, 4):
        return int(mode), {"chosen": int(mode), "why": f"--views {mode}", "candidates": {}}
    told = "mirrored {} told from unmirrored (AUROC of distances, ≤ {:g} looks alike): {}"
    px = (
        told.format("training goods' pixels", MIRROR_ALIKE, _figures(pixels))
        if pixels is not None
        else ""
    )
    cap = 4 if pixels is None else most_views(pixels)
    if cap == 1:
        why = f"{px}; 1 view: {_not_alike(2)}"
        return 1, {"chosen": 1, "why": why, "mirrored_pixels_auroc": pixels, "candidates": {}}
    p4 = Metric("minkowski", p=4.0)
    ref1 = embed(single, x_ref).mean(axis=0)
    d1 = distances(vote.emb, ref1, p4)  # the vote set's single-view embeddings, made once
    alike = mirrored_alike(
        vote.x[vote.good_real],
        lambda t: distances(embed(single, t), ref1, p4),
        d1[vote.good_real],
    )
    views = max(2, min(cap, most_views(alike)))  # measured even where it cannot ship: the why
    multi = with_views(single, views)
    name = f"{views} views"
    dv = distances(embed(multi, vote.x), embed(multi, x_ref).mean(axis=0), p4)
    scores = {"1 view": d1, name: dv}
    figures, known, measured = vote.measure(scores)
    on = vote.real if known else np.ones(len(vote.y), bool)  # a good-only line: the whole set
    worse, diff, noise = worse_beyond_noise(d1[on], dv[on], vote.y[on], vote.seed)
    alike_enough = looks_alike(alike, views)
    ships = alike_enough and not worse
    why = (
        (px + "; " if px else "")
        + told.format("validation goods", MIRROR_ALIKE, _figures(alike))
        + f"; p4 {measured}; {name} − 1 view {diff:+.4f} ± {noise:.4f} (resampled)"
        + (
            f"; {name} cost about {views}× the network's work per part"
            if ships
            else f"; 1 view: {_not_alike(views)}"
            if not alike_enough
            else f"; 1 view: {views} separate the validation parts worse, beyond resampling noise"
        )
    )
    out = {
        "chosen": views if ships else 1,
        "why": why,
        "mirrored_goods_auroc": alike,
        "candidates": figures,
        "known": known,
    }
    if pixels is not None:
        out["mirrored_pixels_auroc"] = pixels
    return out["chosen"], out


def _not_alike(views: int) -> str:
    return "the part does not look alike mirrored " + " and ".join(VIEW_MIRRORS[views])


def _figures(alike: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in alike.items())
