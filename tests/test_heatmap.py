"""The heatmap points where hiding the part's detail lowers its score, in the judged image's
pixels, for every fit mode."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.heatmap import heat_of, occlusion, to_source
from edge_runtime.preprocess import InputSpec, prepare, to_tensor


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(120, 6, (h, w)), 0, 255).astype(np.uint8)


def _spot_score(spec: InputSpec):
    """A stand-in distance that only a small bright spot raises: the brightest 3×3 mean."""
    import cv2

    def score(x: np.ndarray) -> np.ndarray:
        imgs = x.reshape(len(x), spec.height, spec.width)
        return np.array([cv2.blur(i, (3, 3)).max() for i in imgs])

    return score


@pytest.mark.parametrize("fit", ["pad", "crop", "stretch"])
def test_peak_lands_on_the_defect_in_source_pixels(fit):
    img = _textured(90, 150)
    img[60:64, 100:104] = 255  # a 4×4 bright pit at (x 101.5, y 61.5)
    spec = InputSpec(64, 64, layout="nhwc", fit=fit)
    heat = heat_of(prepare(img, spec), img.shape, spec, _spot_score(spec))
    x, y = heat.peak_xy
    cell = 150 / 8 if fit != "crop" else 90 / 8  # source pixels per heat cell, roughly
    assert abs(x - 101.5) <= cell and abs(y - 61.5) <= cell, (fit, heat.peak_xy)
    assert 0 < heat.area < 0.25 and heat.drop > 0


def test_no_defect_gives_a_flat_map():
    spec = InputSpec(32, 32, layout="nhwc")
    patch = np.full((32, 32), 100, np.uint8)
    heat, _, drop = occlusion(patch, spec, _spot_score(spec))
    assert drop == 0 and not heat.any() and heat.shape == (32, 32)


def test_to_source_inverts_each_fit():
    spec = InputSpec(20, 20, fit="pad")  # 10×40 → 5×20 at rows 7..11
    assert to_source(10, 9.5, 10, 40, spec) == (20, 5)
    crop = InputSpec(20, 20, fit="crop")  # the centre 10×10 of 10×40
    assert to_source(10, 10, 10, 40, crop) == (20, 5)
    assert to_source(10, 10, 10, 40, InputSpec(20, 20, fit="stretch")) == (20, 5)


def test_tensor_batch_matches_the_runtime_layout():
    spec = InputSpec(16, 24, layout="flat")
    patch = _textured(16, 24)
    seen = []

    def score(x):
        seen.append(x.shape)
        return np.zeros(len(x))

    occlusion(patch, spec, score)
    assert seen[0][1] == 16 * 24 and np.allclose(to_tensor(patch, spec)[0], patch.ravel() / 255)


@pytest.mark.parametrize("seed, side", [(2, 1), (7, 2)])  # parts with a strong rim: top, right
def test_hiding_a_border_cell_keeps_the_profile_across_the_border(seed, side):
    """A cell on the part's border is hidden along the border only: the rim the part has there
    (a bevel, the fixture showing — good parts have it too) stays, the detail along it goes.
    Blurring it every way smeared the rim inward, which a trained network scores as a defect
    of its own, so the cells beside an edge defect out-scored the cells on it."""
    from edge_runtime.preprocess import placement
    from edge_runtime.synthetic import tile

    img, _ = tile.render_still(np.random.default_rng(seed), "good")  # a generated tile part
    spec = InputSpec(120, 136, layout="nhwc", fit="pad")
    y0, x0, rows, cols = placement(*img.shape, spec)
    seen = []

    def score(x):
        seen.append(np.rint(x[..., 0] * 255)[:, y0 : y0 + rows, x0 : x0 + cols])
        return np.zeros(len(x))

    occlusion(prepare(img, spec), spec, score, content=(y0, x0, rows, cols))
    # turn the part so the rim's side is on the left (rot90 turns the top to the left)
    orig, *variants = (np.rot90(v, side) for v in seen[0])
    h, w = orig.shape
    rim = np.abs(orig[:, :3].mean() - orig[:, 8:20].mean())
    assert rim > 50, rim  # the precondition: a rim worth keeping
    checked = 0
    for v in variants:
        ys, xs = np.nonzero(v != orig)
        if len(ys) == 0 or xs.min() != 0 or xs.max() == w - 1:
            continue  # only cells on that border...
        if ys.min() < 16 or ys.max() > h - 17:
            continue  # ...clear of the corners
        band = slice(ys.min(), ys.max() + 1), slice(0, 6)
        before, after = orig[band], v[band]
        # the rim is still there: the profile across the border, against its inner end
        (pb, pa) = (b.mean(0) - b.mean(0)[-1] for b in (before, after))
        assert np.abs(pb - pa).max() < 10, (pb, pa)
        step = [np.abs(np.diff(b, axis=0)).mean() for b in (before, after)]  # along the border
        assert step[1] < 0.5 * step[0], step  # the detail is gone
        checked += 1
    assert checked >= 4, checked
