"""--views auto (train.score_choice.choose_views): mirror views ship where the validation parts
say they help — a surface whose evidence is everywhere — and not on an oriented part whose
evidence is in one place. The embedding here is a stand-in that sees only the top-left of its
input, so each mirror view sees a different quarter of the part, as a real branch sees a
differently-noisy version of it."""

from __future__ import annotations

import numpy as np

from edge_runtime.preprocess import InputSpec, to_tensor
from train.score_choice import (
    MIRROR_ALIKE,
    VoteSet,
    choose_views,
    pixels_alike_mirrored,
    worse_beyond_noise,
)

SPEC = InputSpec(height=24, width=32, layout="nhwc")


def single(t: np.ndarray) -> np.ndarray:
    """4×4 block means of the top-left 12×16 of each input: 12 features, one quarter seen."""
    q = t[:, :12, :16, 0].reshape(len(t), 3, 4, 4, 4)
    return q.mean(axis=(2, 4)).reshape(len(t), -1)


def with_views(model, views: int):
    if views == 1:
        return model
    mirrors = {
        2: (lambda t: t, lambda t: t[:, ::-1, ::-1]),
        4: (lambda t: t, lambda t: t[:, :, ::-1], lambda t: t[:, ::-1], lambda t: t[:, ::-1, ::-1]),
    }[views]
    return lambda t: np.hstack([model(np.ascontiguousarray(m(t))) for m in mirrors])


def embed(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x), dtype=np.float64)


def _parts(n: int, rng: np.random.Generator, defect, oriented: bool) -> np.ndarray:
    """Noisy gray parts; an oriented part has a bright bar at its top left."""
    img = rng.normal(120, 12, size=(n, *SPEC.size))
    if oriented:
        img[:, 2:6, 2:14] += 60
    return np.clip(defect(img), 0, 255).astype(np.uint8)


def _vote(oriented: bool, defect) -> tuple[VoteSet, np.ndarray]:
    rng = np.random.default_rng(0)
    goods = _parts(120, rng, lambda a: a, oriented)
    bad = _parts(40, rng, defect, oriented)
    images = np.concatenate([goods[:80], bad])
    is_defect = np.r_[np.zeros(80, bool), np.ones(40, bool)]
    vote = VoteSet(
        to_tensor(images, SPEC), is_defect, goods[:80], SPEC, 0, lambda t: embed(single, t)
    )
    return vote, to_tensor(goods[80:], SPEC)


def _everywhere(a: np.ndarray) -> np.ndarray:
    """A surface defect: the whole part a little brighter (each view sees it through its own
    quarter's noise)."""
    return a + 4


def _top_left(a: np.ndarray) -> np.ndarray:
    """An oriented part's defect: its bar broken, where only the unmirrored view looks."""
    a[:, 2:6, 6:10] -= 40
    return a


def test_auto_ships_four_views_on_a_surface_and_one_on_an_oriented_part():
    vote, ref = _vote(False, _everywhere)
    views, why = choose_views("auto", single, ref, vote, embed, with_views)
    known = why["known"]
    assert views == 4 and known["4 views"] > known["1 view"] + 0.001, why
    assert max(why["mirrored_goods_auroc"].values()) < 0.65  # mirrored noise is noise
    assert "4 views" in why["why"] and "4×" in why["why"]

    vote, ref = _vote(True, _top_left)
    views, why = choose_views("auto", single, ref, vote, embed, with_views)
    assert views == 1 and "does not look alike mirrored both" in why["why"], why
    # mirrored, the bar leaves the quarter the branch sees: every good part is told apart
    assert why["mirrored_goods_auroc"]["both"] == 1.0


def test_a_surface_gets_four_views_even_when_validation_cannot_show_the_gain():
    """Defects every view sees plainly: one view already separates the validation parts
    perfectly, so they cannot show what four add; the part looks alike in every mirror, and
    four do not separate them worse: 4."""
    vote, ref = _vote(False, lambda a: a + 40)
    views, why = choose_views("auto", single, ref, vote, embed, with_views)
    assert why["known"]["1 view"] == why["known"]["4 views"] == 1.0
    assert views == 4, why


def test_asked_views_are_taken_as_asked():
    vote, ref = _vote(True, _top_left)
    assert choose_views(4, single, ref, vote, embed, with_views)[0] == 4
    assert choose_views(2, single, ref, vote, embed, with_views)[0] == 2
    assert choose_views(1, single, ref, vote, embed, with_views)[1]["why"] == "--views 1"


def test_the_pixel_check_before_training_tells_an_oriented_part_from_a_surface():
    """Mirrored, the oriented part's bar moves away from the template's: every one is told
    apart; a noisy surface mirrored is as good as any other."""
    rng = np.random.default_rng(3)
    oriented = pixels_alike_mirrored(_parts(60, rng, lambda a: a, True), seed=0)
    assert oriented["left/right"] == 1.0 and oriented["top/bottom"] == 1.0
    surface = pixels_alike_mirrored(_parts(60, rng, lambda a: a, False), seed=0)
    assert max(surface.values()) <= MIRROR_ALIKE


def test_pixels_that_do_not_look_alike_keep_one_view_without_asking_the_embedding():
    vote, ref = _vote(False, _everywhere)

    def refuse(model, x):  # the embedding must not be asked: the pixels already said no
        raise AssertionError("embedded")

    turned = {"left/right": 0.5, "top/bottom": 0.5, "both": 0.98}
    views, why = choose_views("auto", single, ref, vote, refuse, with_views, turned)
    assert views == 1 and "pixels" in why["why"] and why["mirrored_pixels_auroc"]["both"]
    # a part unlike its left/right mirror (a Z, an S) still looks alike turned half a turn:
    # two views at most, and the trained embedding has its say
    zed = {"left/right": 0.97, "top/bottom": 0.96, "both": 0.49}
    views, why = choose_views("auto", single, ref, vote, embed, with_views, zed)
    assert views == 2 and why["mirrored_pixels_auroc"] == zed and "pixels" in why["why"]
    assert "2 views" in why["why"] and "4 views" not in why["candidates"]


def test_a_difference_the_validation_parts_cannot_resolve_is_not_worse():
    """60 defects and 140 goods: one defect sinking among the goods costs about 0.005 of
    AUROC — within what drawing other parts would give; half of them sinking is worse."""
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(140, bool), np.ones(60, bool)]
    base = np.r_[rng.normal(0, 1, 140), rng.normal(3, 1, 60)]
    one = base.copy()
    one[140] = -1.0  # one defect now scores like a good part
    worse, diff, noise = worse_beyond_noise(base, one, y, seed=0)
    assert diff < -0.001 and not worse and noise > abs(diff) / 2
    half = base.copy()
    half[140:170] = rng.normal(0, 1, 30)
    worse, diff, _ = worse_beyond_noise(base, half, y, seed=0)
    assert worse and diff < -0.1
