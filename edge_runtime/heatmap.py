"""Where a rejected part differs: occlusion sensitivity of the score, computed by the edge
runtime alone (onnxruntime, no TensorFlow), for NG parts only.

Each cell of a grid over the model input is replaced in turn by a heavily blurred copy of the
same part (so texture and brightness stay plausible and only the local detail is removed), all
variants are embedded in one batch, and a cell's heat is how much the score *drops* when it is
hidden: the defect is where hiding it makes the part look good. Cells overlap by half, so the
map is smooth at half a cell's resolution. Model-agnostic — it works for any exported branch —
and its cost is one batch of about 4·g² embeddings per NG part (g = `grid`), measured by
`twinspect bench`.

A cell that touches the part's border is hidden differently: blurred only *along* that border
(pixels nearer a top or bottom border along x, nearer a side along y), so the profile across
the border stays. Parts have a profile there that good parts share — a bevel, a shadow, a
sliver of fixture where the crop was not quite aligned — and a blur every way smears it inward.
Measured on the tile product (`twinspect generate --product tile`, model of training seed 0,
40 good test parts): hiding a border cell with the every-way blur raised the score by 10% of
itself on average, an interior cell by 1.2%; the network scores the smeared rim as a defect of
its own. So on a defect along the edge the cells on it scored little drop and the cells half a
step inside won: the pointing game (`python -m train.pointing`, peak on the true mask within 2%
of the short side) hit 62–77% of frayed edges over training seeds 0–4. Blurred along the
border, hiding a border cell raises a good part's score by 0.3% (interior cells unchanged), and
frayed edges are hit 79–100% (seed 0: 18/24 → 22/24), the other kinds within one part of
before. Corner cells take each pixel along its nearer border (their rise: 14% → 3.6%).
Same number of embeddings, so the same cost.

A model that fuses the local pixel residual into its score (edge_runtime.residual) already has
a map of where the part is unlike good parts: the residual itself. Its heat is the residual's
windows as the score sees them (the part's own, the pad borders left out), its peak the hottest
residual cell, and its `drop` is measured by hiding the hot region (≥ half the peak, grown by
the residual's window) under what the good parts' subspace rebuilds there — two embeddings
instead of about 4·g². Measured on the default
line with its defect masks (fused default model, every rejected defective test part, peak on
the mask within 1 px, `python -m train.pointing`): occlusion of the fused score 40% (bent tongue
21%, blocked hole 23%, burr 97%, short crimp 38%, scratch 22%), the residual's windows 95%
(78 / 100 / 100 / 100 / 96%), its cells 97% (84 / 100 / 100 / 100 / 100%). The residual is
fused only where it separates parts at least as well as the embedding, so where it is used its
peak is evidence, not noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.preprocess import InputSpec, crop_window, fit, placement, to_tensor
from edge_runtime.residual import Residual

GRID = 8  # cells per side; 2·GRID−1 positions per side with half-cell steps


@dataclass(frozen=True)
class Heat:
    """A heatmap over the model input and its summary for a record."""

    map: np.ndarray  # float32 H×W, 0..1 (1 = the cell whose hiding lowers the score most)
    peak_xy: tuple[int, int]  # peak in pixels of the ROI crop (the image the line judged)
    area: float  # share of the part's pixels at ≥ half the peak heat
    drop: float  # score drop when the peak cell is hidden, as a share of the score

    def summary(self) -> dict:
        return {
            "heat_peak_x": self.peak_xy[0],
            "heat_peak_y": self.peak_xy[1],
            "heat_area": round(self.area, 4),
            "heat_drop": round(self.drop, 4),
        }


def _windows(h: int, w: int, grid: int) -> list[tuple[int, int, int, int]]:
    ch, cw = max(2, -(-h // grid)), max(2, -(-w // grid))
    ys = sorted({min(y, h - ch) for y in range(0, h, max(1, ch // 2))})
    xs = sorted({min(x, w - cw) for x in range(0, w, max(1, cw // 2))})
    return [(y, x, ch, cw) for y in ys for x in xs]


def _occluders(content: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(the part blurred every way, the part blurred only along its nearest border).

    A cell touching the part's border is hidden with the second: it keeps the profile across
    the border (a rim, a shadow, the fixture showing — what good parts have there too) and
    removes only what varies along it. Blurring across the border smears that profile inward,
    which the network scores as a defect of its own (see the module's docstring)."""
    k = round(6 * sigma + 1) | 1  # the size OpenCV picks for (0, 0) on uint8
    iso = cv2.GaussianBlur(content, (0, 0), sigma)
    along_x = cv2.GaussianBlur(content, (k, 1), sigma)  # rows near the top or bottom
    along_y = cv2.GaussianBlur(content, (1, k), 0, sigmaY=sigma)  # columns near a side
    rows, cols = content.shape[:2]
    ys, xs = np.arange(rows)[:, None], np.arange(cols)[None, :]
    nearer_tb = np.minimum(ys, rows - 1 - ys) <= np.minimum(xs, cols - 1 - xs)
    if content.ndim == 3:
        nearer_tb = nearer_tb[..., None]
    return iso, np.where(nearer_tb, along_x, along_y)


def occlusion(
    patch: np.ndarray,
    spec: InputSpec,
    score,
    grid: int = GRID,
    content: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, float, float]:
    """(heat map over the part's content in 0..1, base score, largest drop) for one prepared
    uint8 patch. `score` maps a float32 batch in the spec's layout to N scores.

    Under `pad` the occlusion is applied to the part's content and the borders are re-made
    from it, so a defect mirrored into a border is hidden together with its original."""
    y0, x0, rows, cols = content or (0, 0, spec.height, spec.width)
    content = patch[y0 : y0 + rows, x0 : x0 + cols]
    blurred, along = _occluders(content, max(1.0, min(rows, cols) / grid))
    wins = _windows(rows, cols, grid)
    variants = np.repeat(content[None], len(wins), axis=0)
    for k, (y, x, ch, cw) in enumerate(wins):
        edge = y == 0 or x == 0 or y + ch >= rows or x + cw >= cols
        fill = along if edge else blurred
        variants[k, y : y + ch, x : x + cw] = fill[y : y + ch, x : x + cw]
    batch = np.stack([patch, *(fit(v, spec) for v in variants)])
    s = np.asarray(score(to_tensor(batch, spec)), dtype=np.float64)
    base, drops = s[0], np.maximum(s[0] - s[1:], 0.0)
    heat = np.zeros((rows, cols), np.float64)
    cover = np.zeros((rows, cols), np.float64)
    for d, (y, x, ch, cw) in zip(drops, wins, strict=True):
        heat[y : y + ch, x : x + cw] += d
        cover[y : y + ch, x : x + cw] += 1.0
    heat /= np.maximum(cover, 1.0)
    top = heat.max()
    return (heat / top if top > 0 else heat).astype(np.float32), float(base), float(drops.max())


def to_source(x: float, y: float, src_h: int, src_w: int, spec: InputSpec) -> tuple[int, int]:
    """A point of the model input back in pixels of the image it was fitted from."""
    if spec.fit == "pad":
        y0, x0, rows, cols = placement(src_h, src_w, spec)
        sx, sy = (x - x0) * src_w / cols, (y - y0) * src_h / rows
    elif spec.fit == "crop":
        y0, x0, rows, cols = crop_window(src_h, src_w, spec)
        sx, sy = x0 + x * cols / spec.width, y0 + y * rows / spec.height
    else:
        sx, sy = x * src_w / spec.width, y * src_h / spec.height
    return int(np.clip(round(sx), 0, src_w - 1)), int(np.clip(round(sy), 0, src_h - 1))


def residual_heat(
    patch: np.ndarray,
    spec: InputSpec,
    score,
    residual: Residual,
    content: tuple[int, int, int, int],
) -> tuple[np.ndarray, float, float, tuple[int, int]]:
    """(heat over the part's content in 0..1, base score, score drop when the hot region is
    hidden, peak (row, col) in the content) from a fused model's pixel residual. The map people
    look at is the residual's windows (smooth, as the score sees it), less the part's median —
    the level every window has; the peak is its hottest *cell*, which points more precisely."""
    y0, x0, rows, cols = content
    t = to_tensor(patch[None], spec)

    def on_input(a: np.ndarray) -> np.ndarray:
        if a.shape != (spec.height, spec.width):
            a = cv2.resize(a, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        return a[y0 : y0 + rows, x0 : x0 + cols].astype(np.float64)

    cells = residual.cell_maps(t, spec)
    inner = on_input(residual.windows(cells)[0])
    inner = np.maximum(inner - np.median(inner), 0.0)
    top = inner.max()
    heat = inner / top if top > 0 else inner
    on_cells = on_input(cells[0])
    peak = np.unravel_index(int(np.argmax(on_cells)), on_cells.shape)
    # hide the hot region (≥ half the peak), grown by the residual's window, and rescore
    ch = min(rows, max(2, round(residual.window * spec.height / residual.height)))
    cw = min(cols, max(2, round(residual.window * spec.width / residual.width)))
    hot = cv2.dilate((heat >= 0.5).astype(np.uint8), np.ones((ch, cw), np.uint8)) > 0
    # hidden = the part as the good subspace rebuilds it, inside the hot region only (a blur
    # is no good here: a blurred edge is itself far from every good part's pixels)
    g = residual.grid(t, spec)[0].reshape(residual.height, residual.width, -1)
    delta = residual.rebuild(t, spec)[0] - g
    if delta.shape[:2] != (spec.height, spec.width):
        delta = cv2.resize(delta, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
    delta = delta.reshape(spec.height, spec.width, -1)[y0 : y0 + rows, x0 : x0 + cols]
    part = patch[y0 : y0 + rows, x0 : x0 + cols]
    shift = (delta if part.ndim == 3 else delta[..., 0]) / spec.scale
    mask = hot[..., None] if part.ndim == 3 else hot
    hidden = np.clip(part + np.where(mask, shift, 0.0), 0, 255).round().astype(np.uint8)
    s = np.asarray(score(to_tensor(np.stack([patch, fit(hidden, spec)]), spec)), np.float64)
    drop = float(max(s[0] - s[1], 0.0))
    return heat.astype(np.float32), float(s[0]), drop, (int(peak[0]), int(peak[1]))


def heat_of(
    patch: np.ndarray,
    source_shape: tuple[int, ...],
    spec: InputSpec,
    score,
    residual: Residual | None = None,
) -> Heat:
    """The heatmap of one part and its summary in the judged image's coordinates. The map
    covers the whole model input (zero in the pad borders) so overlays can be drawn from it.
    With the model's fused `residual` the map is the residual's; without, occlusion's."""
    y0, x0, rows, cols = placement(*source_shape[:2], spec)
    content = (y0, x0, rows, cols)
    if residual is not None:
        inner, base, drop, (py, px) = residual_heat(patch, spec, score, residual, content)
    else:
        inner, base, drop = occlusion(patch, spec, score, content=content)
        py, px = np.unravel_index(int(np.argmax(inner)), inner.shape)
    heat = np.zeros(spec.size, np.float32)
    heat[y0 : y0 + rows, x0 : x0 + cols] = inner
    peak = to_source(px + x0 + 0.5, py + y0 + 0.5, *source_shape[:2], spec)
    area = float(np.mean(inner >= 0.5)) if inner.max() > 0 else 0.0
    return Heat(heat, peak, area, drop / base if base > 0 else 0.0)


def overlay(image: np.ndarray, heat: Heat, spec: InputSpec) -> np.ndarray:
    """The judged image (BGR) with the heat blended on in a colour map, at the image's size,
    and the peak ringed: what a person looks at beside the crop."""
    from edge_runtime.overlay import to_bgr

    bgr = to_bgr(image)
    h, w = bgr.shape[:2]
    y0, x0, rows, cols = placement(h, w, spec)
    inner = heat.map[y0 : y0 + rows, x0 : x0 + cols]
    if spec.fit == "crop":
        cy, cx, crows, ccols = crop_window(h, w, spec)
        full = np.zeros((h, w), np.float32)
        full[cy : cy + crows, cx : cx + ccols] = cv2.resize(inner, (ccols, crows))
    else:
        full = cv2.resize(inner, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(np.clip(full, 0, 1) * 255), cv2.COLORMAP_JET)
    alpha = (0.55 * np.clip(full, 0, 1))[..., None]
    out = (bgr * (1 - alpha) + colour * alpha).astype(np.uint8)
    r = max(3, round(0.06 * min(h, w)))
    cv2.circle(out, heat.peak_xy, r, (255, 255, 255), 1, cv2.LINE_AA)
    return out
