"""The tile product's five defect kinds, graded by severity s in [0, 1] (subtle → obvious).

Sizes are in *units*: one pixel of the image shrunk (aspect kept) to fit 128×128
(`tile_surface.unit_px`), because the crops range from ~100 to ~630 px and a defect drawn in raw
pixels would vanish in the large ones. The subtle end of every kind is at least 1.5 units wide,
so a person still sees it in that view; the benign nuisance (tile_surface) is what makes
whole-image pixel comparisons fail.

Each kind edits a `Surface` in place — relative albedo (defects are lit like the surface) and the
coverage of missing material (the fixture shows through) — and returns its pixel mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.synthetic.tile_surface import directional_noise, grid, smooth_field

GOOD = "good"
LABEL_NAMES: dict[str, str] = {
    "good": "good",
    "blowhole": "pit / blowhole",
    "crack": "hairline crack",
    "fray": "frayed edge",
    "break": "edge or corner break",
    "uneven": "uneven texture",
}
DEFECT_LABELS: tuple[str, ...] = tuple(k for k in LABEL_NAMES if k != GOOD)

# Severity ranges, subtle → obvious; lengths in units (1 px of the 128-px fit view).
BLOWHOLE_RADIUS = (1.5, 4.0)
BLOWHOLE_DEPTH = (0.5, 0.8)  # fraction of the albedo the pit takes away
CRACK_WIDTH = (1.5, 2.6)
CRACK_LENGTH = (18.0, 60.0)
CRACK_DARK = (0.4, 0.7)
FRAY_DEPTH = (4.0, 10.0)  # how far the ragged edge reaches into the tile
FRAY_SPAN = (0.2, 0.6)  # fraction of the border it runs along
BREAK_SIZE = (9.0, 24.0)  # benign edge nicks stay under 1.3 units deep
UNEVEN_RADIUS = (12.0, 32.0)
UNEVEN_SHIFT = (0.12, 0.25)  # brightness change of the patch, relative
UNEVEN_TEXTURE = (0.09, 0.16)  # σ of the foreign grain inside the patch, relative

SS = 4  # supersampling of polygons and polylines, for anti-aliased sub-pixel edges


def _lerp(r: tuple[float, float], s: float) -> float:
    return r[0] + (r[1] - r[0]) * s


@dataclass
class Surface:
    """What defects edit. `albedo` and `missing` are h×w float32, modified in place."""

    albedo: np.ndarray  # relative material brightness (1 = nominal)
    missing: np.ndarray  # 0..1 coverage of missing material (the fixture shows)
    unit: float  # px per unit
    grain_dir: float
    grain_len: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.albedo.shape  # type: ignore[return-value]


def _coverage(
    shape: tuple[int, int], draw, x0: int, y0: int, x1: int, y1: int
) -> tuple[np.ndarray, slice, slice]:
    """Anti-aliased coverage (float32 0..1) of what `draw(canvas, to_px)` paints on the window
    [x0, x1) × [y0, y1), rendered SS× larger and area-averaged down."""
    h, w = shape
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    cw, ch = x1 - x0, y1 - y0
    canvas = np.zeros((ch * SS, cw * SS), np.uint8)

    def to_px(pts: np.ndarray) -> np.ndarray:
        return np.rint((np.asarray(pts) - (x0, y0)) * SS).astype(np.int32)

    draw(canvas, to_px)
    cov = cv2.resize(canvas, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return cov, slice(y0, y1), slice(x0, x1)


def _finish_mask(mask: np.ndarray, unit: float) -> np.ndarray:
    """Binary mask, grown by about one unit so it covers the defect's soft edge."""
    k = 2 * max(1, round(unit)) + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)) > 0


def blowhole(rng: np.random.Generator, s: float, surf: Surface) -> np.ndarray:
    """Dark round pits with a rim lit on one side: one, or up to three when severe."""
    h, w = surf.shape
    u = surf.unit
    mask = np.zeros((h, w), bool)
    light = rng.uniform(0, 2 * math.pi)
    n = 1 if s < 0.5 else int(rng.integers(1, 4))
    for k in range(n):
        r = _lerp(BLOWHOLE_RADIUS, s) * u * (1.0 if k == 0 else rng.uniform(0.5, 0.9))
        m = 2.0 * r + 2.0
        cx, cy = rng.uniform(m, w - m), rng.uniform(m, h - m)
        ecc, ang = rng.uniform(0.7, 1.0), rng.uniform(0, math.pi)
        x0, x1 = int(cx - 2 * r) - 1, int(cx + 2 * r) + 2
        y0, y1 = int(cy - 2 * r) - 1, int(cy + 2 * r) + 2
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        ys, xs = grid(y1 - y0, x1 - x0)
        dx, dy = xs + np.float32(x0 - cx), ys + np.float32(y0 - cy)
        ca, sa = math.cos(ang), math.sin(ang)
        rho = np.hypot((dx * ca + dy * sa) / r, (-dx * sa + dy * ca) / (r * ecc))
        inside = np.clip((1.1 - rho) / 0.3, 0.0, 1.0)
        facing = np.cos(np.arctan2(dy, dx) - np.float32(light))  # +1 toward the light
        ring = np.exp(-(((rho - 1.2) / 0.22) ** 2))
        depth = _lerp(BLOWHOLE_DEPTH, s)
        win = surf.albedo[y0:y1, x0:x1]
        win *= (1.0 - depth * inside * (0.85 - 0.15 * facing)) * (1.0 + 0.35 * ring * facing)
        mask[y0:y1, x0:x1] |= rho <= 1.35
    return _finish_mask(mask, u)


def _walk(
    rng: np.random.Generator, start: tuple[float, float], heading: float, length: float, step: float
) -> np.ndarray:
    """An irregular polyline: its heading jitters and bends but keeps returning to the overall
    direction (cracks zigzag and curve, they do not curl up)."""
    pts = [start]
    bend = rng.normal(0.0, 0.04)  # a slow, steady curve
    dev = 0.0
    for i in range(max(2, int(length / step))):
        dev = 0.6 * dev + rng.normal(0.0, 0.4)
        a = heading + dev + bend * i
        x, y = pts[-1]
        pts.append((x + step * math.cos(a), y + step * math.sin(a)))
    return np.asarray(pts)


def crack(rng: np.random.Generator, s: float, surf: Surface) -> np.ndarray:
    """A hairline crack: a thin, tapering, irregular dark polyline, branched when severe."""
    h, w = surf.shape
    u = surf.unit
    length = min(_lerp(CRACK_LENGTH, s) * u, 0.8 * max(h, w))
    width = _lerp(CRACK_WIDTH, s) * u
    heading = rng.uniform(0, 2 * math.pi)
    paths = [_walk(rng, (0.0, 0.0), heading, length, 2.0 * u)]
    if s > 0.4 and rng.uniform() < 0.6:
        at = paths[0][int(rng.integers(1, len(paths[0]) - 1))]
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        paths.append(_walk(rng, tuple(at), heading + turn, 0.4 * length, 2.0 * u))
    # place it at random on the part, clear of the edge (shrunk about its start if too large)
    allp = np.vstack(paths)
    lo, hi = allp.min(0), allp.max(0)
    room = np.array([w, h], float) - 4 * width
    fit = min(1.0, float(np.min(room / np.maximum(hi - lo, 1e-6))))
    shift = 2 * width + rng.uniform(0.0, 1.0, 2) * np.maximum(room - fit * (hi - lo), 0.0)
    paths = [(p - lo) * fit + shift for p in paths]
    allp = np.vstack(paths)
    pad = int(2 * width) + 2
    x0, y0 = allp.min(0).astype(int) - pad
    x1, y1 = allp.max(0).astype(int) + pad

    def draw(canvas: np.ndarray, to_px) -> None:
        for j, p in enumerate(paths):
            q = to_px(p)
            n = len(q) - 1
            for i in range(n):
                taper = 0.55 + 0.45 * math.sin(math.pi * (i + 0.5) / n)
                t = width * (1.0 if j == 0 else 0.7) * taper * rng.uniform(0.8, 1.2)
                th = max(1, round(t * SS))
                cv2.line(canvas, tuple(q[i]), tuple(q[i + 1]), 255, th, cv2.LINE_8)

    cov, sy, sx = _coverage((h, w), draw, x0, y0, x1, y1)
    surf.albedo[sy, sx] *= 1.0 - _lerp(CRACK_DARK, s) * cov
    mask = np.zeros((h, w), bool)
    mask[sy, sx] = cov > 0.2
    return _finish_mask(mask, u)


def _ragged(rng: np.random.Generator, n: int, spacing: float) -> np.ndarray:
    """A 1-D jagged profile 0..1 of n samples: random teeth every ~`spacing` px."""
    k = max(2, int(n / max(spacing, 1.0)) + 2)
    knots = rng.uniform(0.0, 1.0, k).astype(np.float32)
    return np.interp(np.arange(n), np.linspace(0, n - 1, k), knots).astype(np.float32)


def _border_frame(side: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(distance from that border, position along it, its length) for side 0..3 =
    top, left, bottom, right."""
    ys, xs = grid(h, w)
    dist = (ys, xs, h - ys, w - xs)[side]
    along = (xs, ys, xs, ys)[side]
    return np.broadcast_to(dist, (h, w)), np.broadcast_to(along, (h, w)), (w, h, w, h)[side]


def fray(rng: np.random.Generator, s: float, surf: Surface) -> np.ndarray:
    """A frayed stretch of one border: a torn, toothed edge (fixture showing) behind which the
    material is dark and streaked across the edge."""
    h, w = surf.shape
    u = surf.unit
    side = int(rng.integers(0, 4))
    dist, along, n = _border_frame(side, h, w)
    span = _lerp(FRAY_SPAN, s) * n
    at = rng.uniform(span / 2, n - span / 2)
    depth = min(_lerp(FRAY_DEPTH, s) * u, 0.3 * (h, w, h, w)[side])
    pos = np.arange(n, dtype=np.float32) + 0.5
    env = np.clip(1.0 - np.abs(pos - at) / (span / 2), 0.0, 1.0) ** 0.4
    torn = depth * env * (0.2 + 0.8 * _ragged(rng, n, rng.uniform(1.0, 2.5) * u))
    worn = depth * env * (0.9 + 0.9 * _ragged(rng, n, rng.uniform(1.5, 4.0) * u))
    idx = np.clip(along.astype(np.int32), 0, n - 1)
    torn_m, worn_m = torn[idx], worn[idx]
    missing = np.clip(torn_m - dist + 0.5, 0.0, 1.0)
    band = np.clip((worn_m - dist) / max(u, 1.0), 0.0, 1.0)
    fibres = directional_noise(rng, h, w, (0.5 * math.pi if side in (0, 2) else 0.0), 2.5 * u, 0.7)
    surf.albedo *= 1.0 - band * np.clip(0.45 + 0.2 * fibres, 0.1, 0.9) * (0.6 + 0.4 * s)
    np.maximum(surf.missing, missing, out=surf.missing)
    return _finish_mask((band > 0.3) | (missing > 0.3), u)


def _break_polygon(rng: np.random.Generator, size: float, h: int, w: int) -> np.ndarray:
    """Outline of the missing piece: a corner knocked off or a bite out of an edge, with an
    irregular fracture line; points may lie outside the image (the piece extends past it)."""
    if rng.uniform() < 0.5:  # corner
        cx, cy = rng.choice([0.0, w]), rng.choice([0.0, h])
        sx, sy = (1.0 if cx == 0 else -1.0), (1.0 if cy == 0 else -1.0)
        a, b = size * rng.uniform(0.7, 1.5), size * rng.uniform(0.7, 1.5)
        ts = np.linspace(0.0, 1.0, 9)
        bulge = rng.uniform(-0.15, 0.3)
        fx = sx * a * (1 - ts) + sx * bulge * size * np.sin(math.pi * ts)
        fy = sy * b * ts + sy * bulge * size * np.sin(math.pi * ts)
        jit = rng.normal(0.0, 0.07 * size, (2, 9)) * np.sin(math.pi * ts)
        frac = np.c_[cx + fx + jit[0], cy + fy + jit[1]]
        out = 4.0
        corner = np.array([[cx - sx * out, cy + sy * b], [cx - sx * out, cy - sy * out]])
        corner = np.vstack([corner, [[cx + sx * a, cy - sy * out]]])
        return np.vstack([frac, corner])
    side = int(rng.integers(0, 4))
    length = (w, h, w, h)[side]
    c = rng.uniform(size, length - size) if length > 2 * size else length / 2
    half = size * rng.uniform(0.6, 1.1)
    deep = size * rng.uniform(0.45, 0.85)
    ts = np.linspace(-1.0, 1.0, 11)
    prof = deep * np.sqrt(np.clip(1 - ts**2, 0, 1)) + rng.normal(0, 0.08 * size, 11) * (1 - ts**2)
    a_pos = c + half * ts + rng.normal(0, 0.05 * size, 11)
    pts = np.c_[a_pos, prof]
    pts = np.vstack([pts, [[c + half + 4, -4.0], [c - half - 4, -4.0]]])
    if side == 0:
        return pts
    if side == 2:
        return np.c_[pts[:, 0], h - pts[:, 1]]
    if side == 1:
        return np.c_[pts[:, 1], pts[:, 0]]
    return np.c_[w - pts[:, 1], pts[:, 0]]


def break_(rng: np.random.Generator, s: float, surf: Surface) -> np.ndarray:
    """A piece missing from an edge or a corner: the fixture shows, and the fracture face just
    inside catches the light (or falls in shadow)."""
    h, w = surf.shape
    u = surf.unit
    size = min(_lerp(BREAK_SIZE, s) * u, 0.3 * min(h, w))
    poly = _break_polygon(rng, size, h, w)
    face_w = max(1.0, rng.uniform(0.8, 1.6) * u)
    pad = int(face_w) + 3
    x0, y0 = poly.min(0).astype(int) - pad
    x1, y1 = poly.max(0).astype(int) + pad

    def draw_piece(canvas: np.ndarray, to_px) -> None:
        cv2.fillPoly(canvas, [to_px(poly)], 255, cv2.LINE_8)

    def draw_face(canvas: np.ndarray, to_px) -> None:
        q = to_px(poly)
        cv2.polylines(canvas, [q], True, 255, max(1, round(2 * face_w * SS)), cv2.LINE_8)

    piece, sy, sx = _coverage((h, w), draw_piece, x0, y0, x1, y1)
    face, _, _ = _coverage((h, w), draw_face, x0, y0, x1, y1)
    face = face * (1.0 - piece)
    lit = rng.uniform(0.25, 0.6) if rng.uniform() < 0.65 else -rng.uniform(0.25, 0.45)
    surf.albedo[sy, sx] *= 1.0 + lit * face
    np.maximum(surf.missing[sy, sx], piece, out=surf.missing[sy, sx])
    mask = np.zeros((h, w), bool)
    mask[sy, sx] = (piece > 0.3) | (face > 0.3)
    return _finish_mask(mask, u)


def uneven(rng: np.random.Generator, s: float, surf: Surface) -> np.ndarray:
    """A patch of disturbed texture under a smooth random blob: brighter or darker, with grain
    running another way and rougher than the rest."""
    h, w = surf.shape
    u = surf.unit
    r = min(_lerp(UNEVEN_RADIUS, s) * u, 0.42 * min(h, w))
    cx, cy = rng.uniform(0.6 * r, w - 0.6 * r), rng.uniform(0.6 * r, h - 0.6 * r)
    ecc, ang = rng.uniform(0.55, 1.0), rng.uniform(0, math.pi)
    ys, xs = grid(h, w)
    dx, dy = xs - np.float32(cx), ys - np.float32(cy)
    ca, sa = math.cos(ang), math.sin(ang)
    rho2 = ((dx * ca + dy * sa) / r) ** 2 + ((-dx * sa + dy * ca) / (r * ecc)) ** 2
    field = 1.0 - rho2 + 0.45 * smooth_field(rng, h, w, 7)
    soft = np.clip(field / 0.35 + 0.5, 0.0, 1.0)
    soft = soft * soft * (3.0 - 2.0 * soft)  # smoothstep
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.4)
    foreign = directional_noise(
        rng, h, w, surf.grain_dir + turn, max(3.0, 0.5 * surf.grain_len), 1.2
    )
    surf.albedo *= 1.0 + soft * (sign * _lerp(UNEVEN_SHIFT, s) + _lerp(UNEVEN_TEXTURE, s) * foreign)
    return _finish_mask(soft > 0.5, 0.0)


DRAW = {"blowhole": blowhole, "crack": crack, "fray": fray, "break": break_, "uneven": uneven}


def draw_defect(rng: np.random.Generator, label: str, surf: Surface) -> np.ndarray:
    """Draw one defect of `label` with a uniform severity; its bool mask."""
    if label not in DRAW:
        raise ValueError(f"unknown tile defect label {label!r}")
    return DRAW[label](rng, float(rng.uniform()), surf)
