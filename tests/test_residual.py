"""The local pixel residual (edge_runtime.residual) and the fused score in the sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.errors import BadModel
from edge_runtime.evaluation import auroc
from edge_runtime.preprocess import InputSpec, to_tensor
from edge_runtime.residual import MAX_PIXELS, fit_residual, grid_size
from edge_runtime.scoring import Fusion, Metric, part_scores, spread
from edge_runtime.sidecar import SCHEMA_VERSION, Sidecar
from edge_runtime.synthetic.writer import Config, generate

SPEC = InputSpec()


@pytest.fixture(scope="module")
def goods(tmp_path_factory) -> np.ndarray:
    """Good terminals the generator draws, at the default 26×36 input."""
    from edge_runtime.datasets import load_labeled

    out = tmp_path_factory.mktemp("residual") / "line"
    generate(Config(out=out, n_train=400, n_test=10, n_frames=0, seed=3, workers=1))
    data = load_labeled(out, split="train", spec=SPEC)
    return np.asarray(data.images)[np.asarray(data.labels) == "0"]


def _scratch(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A faint one-pixel line, 6 px long, somewhere on each part: a few pixels of evidence."""
    out = images.astype(np.int16).copy()
    for img in out:
        y, x = rng.integers(4, 22), rng.integers(4, 28)
        img[y, x : x + 6] += 30
    return np.clip(out, 0, 255).astype(np.uint8)


def test_the_worst_window_finds_a_thin_scratch_that_the_total_dilutes(goods):
    fit, held = goods[:-60], goods[-60:]
    res = fit_residual(to_tensor(fit, SPEC), SPEC)
    scratched = _scratch(held, np.random.default_rng(0))
    x = to_tensor(np.concatenate([held, scratched]), SPEC)
    y = np.r_[np.zeros(len(held), bool), np.ones(len(held), bool)]
    local = auroc(res.scores(x, SPEC), y)
    # the same subspace, scored by the whole part's residual energy instead
    xc = res.grid(x, SPEC) - res.mean
    r = xc - (xc @ res.components.T) @ res.components
    total = auroc((r * r).sum(axis=1), y)
    assert local >= 0.95 and local > total + 0.05  # measured 0.98 vs 0.85


def test_grid_keeps_small_inputs_and_bounds_large_ones_with_their_aspect():
    assert grid_size(SPEC) == (26, 36)
    h, w = grid_size(InputSpec(height=120, width=136, layout="nhwc"))
    assert h * w <= MAX_PIXELS and abs(h / w - 120 / 136) < 0.05


def test_a_larger_input_is_fitted_on_its_bounded_grid(goods):
    spec = InputSpec(height=52, width=72, layout="nhwc")
    big = np.repeat(np.repeat(goods[:50], 2, axis=1), 2, axis=2)
    res = fit_residual(to_tensor(big, spec), spec)
    assert (res.height, res.width) == grid_size(spec)
    assert res.scores(to_tensor(big[:5], spec), spec).shape == (5,)


def _fused_sidecar(untrained_model_dir, goods) -> tuple[Sidecar, Fusion]:
    sc = Sidecar.load(untrained_model_dir / "model.json")
    res = fit_residual(to_tensor(goods[:100], sc.input), sc.input)
    return sc, Fusion(res, 0.5, 2.0)


def test_a_fused_sidecar_round_trips_and_scores_the_same(untrained_model_dir, goods, tmp_path):
    sc, fusion = _fused_sidecar(untrained_model_dir, goods)
    sc.fusion = fusion
    path = tmp_path / "model.json"
    sc.save(path)
    again = Sidecar.load(path)
    assert again.schema_version == SCHEMA_VERSION and again.fusion is not None
    x = to_tensor(goods[100:120], sc.input)
    emb = np.random.default_rng(0).normal(size=(len(x), sc.embedding_dim))
    a = part_scores(emb, x, sc.reference.vector, sc.metric, fusion, sc.input)
    b = part_scores(emb, x, again.reference.vector, again.metric, again.fusion, again.input)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    plain = part_scores(emb, x, sc.reference.vector, sc.metric, None, sc.input)
    residual = fusion.residual.scores(x, sc.input)
    np.testing.assert_allclose(a, plain / 0.5 + residual / 2.0, rtol=1e-12)


def test_a_schema_3_sidecar_loads_without_fusion(untrained_model_dir):
    d = json.loads((untrained_model_dir / "model.json").read_text())
    d["schema_version"] = 3
    d.pop("fusion", None)
    sc = Sidecar.from_dict(d)
    assert sc.fusion is None
    emb = np.ones((2, sc.embedding_dim))
    np.testing.assert_allclose(
        part_scores(emb, None, sc.reference.vector, sc.metric, None, sc.input),
        part_scores(
            emb, None, sc.reference.vector, Metric(sc.metric.name, sc.metric.p), None, sc.input
        ),
    )


def test_a_broken_fusion_block_is_one_line_naming_the_field(untrained_model_dir, goods):
    sc, fusion = _fused_sidecar(untrained_model_dir, goods)
    sc.fusion = fusion
    d = json.loads(sc.to_json())
    d["fusion"]["residual"]["mean"] = d["fusion"]["residual"]["mean"][:-3]
    with pytest.raises(BadModel, match="field 'fusion'"):
        Sidecar.from_dict(d, where="m/model.json")
    d = json.loads(sc.to_json())
    d["fusion"]["residual_scale"] = 0
    with pytest.raises(BadModel, match="residual_scale"):
        Sidecar.from_dict(d, where="m/model.json")


def test_spread_is_never_zero():
    assert spread(np.array([1.0, 2.0, 3.0, 100.0])) > 0
    assert spread(np.full(10, 3.0)) == 3.0
    assert spread(np.zeros(10)) > 0


def test_a_fused_models_heat_is_its_residual_and_points_at_the_scratch(goods):
    from edge_runtime.heatmap import heat_of

    res = fit_residual(to_tensor(goods[:-20], SPEC), SPEC)
    part = goods[-1].astype(np.int16).copy()
    part[9, 20:26] += 60  # a faint one-pixel scratch, 6 px long
    part = np.clip(part, 0, 255).astype(np.uint8)

    def score(x: np.ndarray) -> np.ndarray:  # the residual alone, as a fused score's stand-in
        return res.scores(x, SPEC)

    heat = heat_of(part, part.shape, SPEC, score, res)
    x, y = heat.peak_xy
    assert abs(y - 9) <= 1 and 19 <= x <= 26
    assert 0 < heat.area < 0.2 and heat.drop > 0.5  # hiding the scratch's window removes most


def test_auto_goes_without_a_residual_it_cannot_fit_and_on_says_why(goods):
    from edge_runtime.errors import BadInput
    from train.score_choice import VoteSet, choose_fusion

    same = np.repeat(goods[:1], 20, axis=0)  # identical good parts: nothing to model
    x = to_tensor(same, SPEC)

    def embed(t: np.ndarray) -> np.ndarray:
        return t.reshape(len(t), -1)[:, :8].astype(np.float64)

    vote = VoteSet(x[:10], np.zeros(10, bool), same[:10], SPEC, 0, embed)

    ref = embed(x).mean(axis=0)
    fusion, why = choose_fusion(x, ref, Metric("minkowski", 4.0), vote, SPEC, "auto")
    assert fusion is None and why["chosen"] == "off" and "identical" in why["why"]
    with pytest.raises(BadInput, match="identical"):
        choose_fusion(x, ref, Metric("minkowski", 4.0), vote, SPEC, "on")


def _known_terms(n: int = 200) -> np.ndarray:
    """Rejected known defects' two terms: the twin's term about twice the residual's."""
    rng = np.random.default_rng(1)
    r = np.exp(rng.normal(np.log(3.0), 0.3, n))
    return np.c_[2.0 * r * np.exp(rng.normal(0, 0.15, n)), r]


def test_the_novelty_region_holds_the_known_mix_and_not_a_kind_the_twin_misses():
    from edge_runtime.scoring import MIN_NOVELTY_PARTS, fit_novelty

    known = _known_terms()
    region = fit_novelty(known)
    inside = region.distance(known)
    assert np.mean(inside > 1) == pytest.approx(0.025, abs=0.01)  # radius: 97.5th percentile
    # as far from good (same sum), but the twin sees little of it: a kind it was not shown
    assert region.distance([[1.0, 8.0]])[0] > 1
    assert region.distance([[6.0, 3.0]])[0] < 1  # the known mix
    assert fit_novelty(known[: MIN_NOVELTY_PARTS - 1]) is None  # too few to place it
    assert fit_novelty(np.ones((50, 2))) is None  # no spread: no region


def test_each_known_kind_gets_its_region_and_the_gap_between_them_is_novel():
    """Two kinds apart in the plane: one ellipse around both would cover the gap between them,
    where a kind the twin was not shown can land; a region per kind does not. A kind with too
    few parts for its own region shares one over all the parts, so it is never NOVEL for it."""
    from edge_runtime.scoring import MIN_NOVELTY_PARTS, fit_novelty

    twin_heavy = _known_terms()  # the twin's term twice the residual's
    residual_heavy = _known_terms()[:, ::-1] * np.array([1.0, 4.0])  # the residual's 8× the twin's
    terms = np.r_[twin_heavy, residual_heavy]
    kinds = np.r_[np.full(200, "burr"), np.full(200, "pit")]
    per_kind, one = fit_novelty(terms, kinds), fit_novelty(terms)
    assert [(r.label, r.n) for r in per_kind.regions] == [("burr", 200), ("pit", 200)]
    assert [r.label for r in one.regions] == [None]
    gap = np.exp(np.log(terms).mean(axis=0, keepdims=True))  # between the kinds, on the log scale
    assert one.distance(gap)[0] < 1 < per_kind.distance(gap)[0]
    nearest = np.min([r.distance(terms) for r in per_kind.regions], axis=0)
    np.testing.assert_allclose(per_kind.distance(terms), nearest)  # the stacked pass: the nearest
    for own in (twin_heavy, residual_heavy):  # each kind's parts: inside, 97.5% of them
        assert np.mean(per_kind.distance(own) > 1) == pytest.approx(0.025, abs=0.01)
    few = np.r_[np.full(200, "burr"), np.full(MIN_NOVELTY_PARTS - 1, "pit")]
    mixed = fit_novelty(terms[: len(few)], few)
    assert [r.label for r in mixed.regions] == ["burr", None]  # the pits share the pooled one
    assert np.all(mixed.distance(terms[200 : len(few)]) <= 1 + 1e-9)  # widened to hold them


def test_a_fused_part_is_novel_by_the_region_and_schema_4_keeps_the_prototypes(
    untrained_model_dir, goods, tmp_path
):
    """Through the sidecar and the line's Inspector: with a region, the two terms decide NOVEL;
    a schema-4 sidecar (no region) loads, and its prototypes decide as before."""
    import dataclasses
    import shutil

    from edge_runtime.inspector import Inspector
    from edge_runtime.model import load_model_dir
    from edge_runtime.scoring import Novelty, Region, fit_novelty, fusion_terms

    sc, fusion = _fused_sidecar(untrained_model_dir, goods)
    x = to_tensor(goods[100:101], sc.input)
    model0 = load_model_dir(untrained_model_dir)
    terms = fusion_terms(model0.embed(x), x, sc.reference.vector, sc.metric, fusion, sc.input)
    here = np.log(terms[0])

    def judged(novelty: Novelty | None, version: int = SCHEMA_VERSION):
        sc.fusion = dataclasses.replace(fusion, novelty=novelty)
        out = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(untrained_model_dir, out)
        d = json.loads(sc.to_json())
        d["schema_version"] = version
        (out / "model.json").write_text(json.dumps(d))
        insp = Inspector(load_model_dir(out), threshold=-1.0)  # every part is rejected
        return insp.inspect(goods[100]), insp.judge_patches(goods[100:101])[1][0]

    near = Region(here, np.eye(2), 1.0, 10, "burr")  # the part sits at the region's centre
    far = Region(here + np.array([3.0, 0.0]), np.eye(2), 1.0, 10, "pit")  # 20× more twin
    cases = ((near, "NG"), (far, "NOVEL"))
    for regions, expect in (*(((r,), e) for r, e in cases), ((far, near), "NG")):
        j, v = judged(Novelty(regions))
        assert j.verdict == v.verdict == expect  # NOVEL only outside every kind's region
        assert (
            j.type_distance
            == pytest.approx(v.type_distance, abs=1e-4)
            == pytest.approx(float(Novelty(regions).distance(terms)[0]), rel=1e-3, abs=1e-4)
        )
    # schema 5 held one region at the top of fusion.novelty: it still loads and decides
    for region, expect in cases:
        sc.fusion = dataclasses.replace(fusion, novelty=None)
        d = json.loads(sc.to_json())
        d["schema_version"] = 5
        d["fusion"]["novelty"] = {k: v for k, v in region.to_dict().items() if k != "label"}
        old = Sidecar.from_dict(d, where="m/model.json")
        assert [(r.label, r.n) for r in old.fusion.novelty.regions] == [(None, 10)]
        out = tmp_path / f"v5-{expect}"
        shutil.copytree(untrained_model_dir, out)
        (out / "model.json").write_text(json.dumps(d))
        assert Inspector(load_model_dir(out), threshold=-1.0).inspect(goods[100]).verdict == expect
    j, _ = judged(None, version=4)  # no region, no prototypes: NG as schema 4 judged it
    assert j.verdict == "NG" and j.type_distance is None
    assert fit_novelty(_known_terms()) is not None
    d = json.loads(sc.to_json())
    d["fusion"]["novelty"] = {"center": [0.0], "inv_cov": [[1.0]], "radius": 1.0, "n": 3}
    with pytest.raises(BadModel, match=r"field 'fusion'.*novelty"):
        Sidecar.from_dict(d, where="m/model.json")
    d["fusion"]["novelty"] = {"regions": [near.to_dict(), {"center": [0.0, 1.0]}]}
    with pytest.raises(BadModel, match=r"missing field 'fusion.novelty.regions.1.inv_cov'"):
        Sidecar.from_dict(d, where="m/model.json")
