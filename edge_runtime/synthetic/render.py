"""Rendering of one crimped ring terminal on the belt: part geometry, nuisance, photometry.

Geometry lives in *units*: 1 unit = 1 pixel of the 36×26 dataset image. The part is drawn
analytically (signed distances, anti-aliased coverage) at `ppu` pixels per unit — 6 for the
dataset stills — and shrunk with cv2.INTER_AREA. The camera recording renders the same scene at the
same 6 px/unit, shrinks 2× to the 3 px/unit frame, and the runtime's crop + INTER_AREA gives the
last 3× — one code path, only the last scale step and the camera effects differ.

Canonical part frame: origin at the part's centre, x along the part (tongue left, wire right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.synthetic.defects import GOOD, Defect

OUT_H, OUT_W = 26, 36  # dataset image, rows × cols
SUPERSAMPLE = 6  # render px per unit for the stills
PART_CENTER = (18.0, 13.0)  # nominal part centre in image units

RING_C = (-9.0, 0.0)
RING_R = 6.6
HOLE_R = 2.7
NECK_X = (-3.4, 1.6)
NECK_H = 2.5
BARREL_X = (1.0, 10.0)
BARREL_H = 4.2
STRAND_END = 12.6
STRAND_H = 2.4
INSUL_H = 3.3
BEND_PIVOT = (1.0, 0.0)
PLAY_SIGMAS = 4.0  # fixture play limits are this many σ out
# A defect mask marks the pixels whose light (26×36, defocused, before gain and noise) the defect
# changes by more than this many gray levels: well above the rounding, under the subtlest defect.
MASK_LEVEL = 8.0


@dataclass(frozen=True)
class Nuisance:
    """Everything that varies between good parts (fixture play, lighting, camera, material)."""

    dx: float = 0.0  # shift, output px
    dy: float = 0.0
    angle_deg: float = 0.0
    scale: float = 1.0
    gain: float = 1.0  # brightness multiplier
    contrast: float = 1.0  # around mid-gray
    grad: tuple[float, float] = (0.0, 0.0)  # relative brightness change per 18 px in x, y
    noise: float = 2.0  # sensor noise σ, gray levels at the dataset scale
    blur: float = 0.3  # defocus σ, output px
    metal: float = 195.0
    belt: float = 58.0
    wire: float = 105.0  # insulation gray (wire colours differ)
    sheen_dir: float = 0.0  # radians
    sheen_phase: float = 0.0
    belt_phase: float = 0.0
    blotch: tuple[float, ...] = (0.0,) * 9  # 3 × (amplitude, fx, fy)…; low-frequency belt stain


def _play(rng: np.random.Generator, limit: float) -> float:
    """Fixture play: mostly small, up to ±limit (a normal of σ = limit/4, clipped)."""
    return float(np.clip(rng.normal(0.0, limit / PLAY_SIGMAS), -limit, limit))


def sample_nuisance(rng: np.random.Generator, difficulty: float = 1.0) -> Nuisance:
    """Draw the nuisance of one image; `difficulty` scales every amplitude (0 = a perfect line)."""
    d = float(difficulty)
    u = rng.uniform
    gx, gy = (u(-1.0, 1.0) * 0.10 * d for _ in range(2))
    blotch = []
    for _ in range(3):
        a = u(0.0, 4.0) * d
        f = u(0.08, 0.3)
        t = u(0, 2 * math.pi)
        blotch += [a, f * math.cos(t), f * math.sin(t)]
    return Nuisance(
        dx=_play(rng, 2.0) * d,
        dy=_play(rng, 2.0) * d,
        angle_deg=_play(rng, 3.0) * d,
        scale=1.0 + _play(rng, 0.04) * d,
        gain=1.0 + u(-0.15, 0.15) * d,
        contrast=1.0 + u(-0.15, 0.15) * d,
        grad=(gx, gy),
        noise=u(1.0, 3.0) * d,
        blur=u(0.1, 0.45) * d,
        metal=195.0 + u(-8.0, 8.0) * d,
        belt=58.0 + u(-6.0, 6.0) * d,
        wire=105.0 + u(-20.0, 20.0) * d,
        sheen_dir=u(0, math.pi),
        sheen_phase=u(0, 2 * math.pi),
        belt_phase=u(0, 2 * math.pi),
        blotch=tuple(blotch),
    )


def _box(x: np.ndarray, y: np.ndarray, x0: float, x1: float, h: float, r: float = 0.0):
    """Signed distance to the axis-aligned box [x0, x1] × [-h, h] with rounded corners r."""
    qx = np.abs(x - 0.5 * (x0 + x1)) - (0.5 * (x1 - x0) - r)
    qy = np.abs(y) - (h - r)
    if r == 0.0:  # sharp corners: exact along the edges, which is all the anti-aliasing needs
        return np.maximum(qx, qy)
    out = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    return out - r


def _segment(x, y, x0, y0, x1, y1):
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-12), 0.0, 1.0)
    return np.hypot(x - x0 - t * vx, y - y0 - t * vy)


def _belt(nz: Nuisance, xs: np.ndarray, ys: np.ndarray, belt_shift: float) -> np.ndarray:
    """The belt: a faint woven ridge pattern plus low-frequency stains, fixed to the belt."""
    bx = xs + np.float32(belt_shift)
    belt = nz.belt + 3.0 * np.sin((bx * 0.8 + ys * 0.35) * (2 * math.pi / 2.2) + nz.belt_phase)
    b = nz.blotch
    for k in range(0, len(b), 3):
        belt = belt + b[k] * np.sin(bx * b[k + 1] + ys * b[k + 2] + k)
    return belt


def belt_only(
    nz: Nuisance, ppu: float, x0: float, y0: float, w: int, h: int, belt_shift: float = 0.0
) -> np.ndarray:
    """The empty belt on the same grid convention as `radiance` (float32 h×w)."""
    xs = (x0 + (np.arange(w, dtype=np.float32) + 0.5) / ppu)[None, :]
    ys = (y0 + (np.arange(h, dtype=np.float32) + 0.5) / ppu)[:, None]
    return np.broadcast_to(_belt(nz, xs, ys, belt_shift), (h, w)).astype(np.float32)


def radiance(
    nz: Nuisance,
    defect: Defect,
    ppu: float,
    x0: float,
    y0: float,
    w: int,
    h: int,
    belt_shift: float = 0.0,
) -> np.ndarray:
    """The scene as light (float32 gray levels) on a w×h grid at `ppu` px/unit, whose top-left
    corner is at (x0, y0) in image units. Defocus is applied here, at the render scale."""
    xs = (x0 + (np.arange(w, dtype=np.float32) + 0.5) / ppu)[None, :]
    ys = (y0 + (np.arange(h, dtype=np.float32) + 0.5) / ppu)[:, None]

    belt = _belt(nz, xs, ys, belt_shift)

    # image → canonical part coordinates
    ca, sa = math.cos(math.radians(nz.angle_deg)), math.sin(math.radians(nz.angle_deg))
    cx, cy = PART_CENTER[0] + nz.dx, PART_CENTER[1] + nz.dy
    ux, uy = xs - cx, ys - cy
    px = (ux * ca + uy * sa) / nz.scale
    py = (-ux * sa + uy * ca) / nz.scale
    aa = 1.0 / (ppu * nz.scale)  # one render pixel in canonical units

    def cov(d):
        return np.clip(0.5 - d / aa, 0.0, 1.0)

    # the tongue and neck may be bent about the barrel's front end
    if defect.bend_deg:
        cb, sb = math.cos(math.radians(defect.bend_deg)), math.sin(math.radians(defect.bend_deg))
        vx, vy = px - BEND_PIVOT[0], py - BEND_PIVOT[1]
        qx = vx * cb + vy * sb + BEND_PIVOT[0]
        qy = -vx * sb + vy * cb + BEND_PIVOT[1]
    else:
        qx, qy = px, py

    barrel_x1 = BARREL_X[1] - defect.short_crimp * (BARREL_X[1] - BARREL_X[0])

    # signed distances
    r_hole = np.hypot(qx - RING_C[0], qy - RING_C[1])
    d_ring = r_hole - RING_R
    d_hole = r_hole - HOLE_R
    d_neck = _box(qx, qy, NECK_X[0], NECK_X[1], NECK_H)
    d_barrel = _box(px, py, BARREL_X[0], barrel_x1, BARREL_H, 1.0)
    splay = 1.6 * defect.short_crimp * np.clip((STRAND_END - px) / 4.0, 0.0, 1.0)
    d_strand = _box(px, py / (1.0 + splay / STRAND_H), barrel_x1 - 0.5, STRAND_END + 0.5, STRAND_H)
    d_insul = _box(px, py, STRAND_END, 400.0, INSUL_H, 1.2)

    # shadow: the part's silhouette, offset and soft
    d_sh = _box(px - 0.7, py - 0.7, BARREL_X[0], 400.0, BARREL_H)
    d_sh = np.minimum(d_sh, _box(qx - 0.7, qy - 0.7, RING_C[0], NECK_X[1], NECK_H))
    d_sh = np.minimum(d_sh, np.hypot(qx - 0.7 - RING_C[0], qy - 0.7 - RING_C[1]) - RING_R)
    img = belt * (1.0 - 0.35 * np.clip(0.5 - d_sh / 1.2, 0.0, 1.0))

    # insulation: a dull cylinder
    shade = np.cos(np.clip(py / INSUL_H, -1, 1) * (math.pi / 2))
    ins = nz.wire * (0.65 + 0.35 * shade) + 25.0 * np.exp(-(((py + 1.2) / 0.7) ** 2))
    a = cov(d_insul)
    img = img + a * (ins - img)

    # bare strands: copper lines along the wire
    strands = 115.0 + 35.0 * np.sin(py * (2 * math.pi / 0.9) + 0.6 * px)
    a = cov(d_strand)
    img = img + a * (strands - img)

    # crimp barrel: a bright cylinder with two crimp dents and a specular stripe
    m = nz.metal
    shade = np.cos(np.clip(py / BARREL_H, -1, 1) * (math.pi / 2))
    blen = barrel_x1 - BARREL_X[0]
    dents = np.exp(-(((px - BARREL_X[0] - 0.33 * blen) / 0.6) ** 2)) + np.exp(
        -(((px - BARREL_X[0] - 0.72 * blen) / 0.6) ** 2)
    )
    barrel = m * (0.62 + 0.38 * shade) * (1.0 - 0.22 * dents) + 35.0 * np.exp(
        -(((py + 1.4) / 0.6) ** 2)
    )
    a_barrel = cov(d_barrel)
    img = img + a_barrel * (barrel - img)

    # tongue and neck: flat stamped metal with a broad sheen; the hole shows the belt
    sd = nz.sheen_dir
    sheen = 1.0 + 0.08 * np.cos(
        (qx * math.cos(sd) + qy * math.sin(sd)) * (2 * math.pi / 16.0) + nz.sheen_phase
    )
    tongue = m * 0.95 * sheen
    a_tongue = np.maximum(cov(d_ring), cov(d_neck))
    if defect.hole_blocked > 0:
        bl = defect.hole_blocked
        ox = RING_C[0] + math.cos(defect.hole_dir) * HOLE_R * bl
        oy = RING_C[1] + math.sin(defect.hole_dir) * HOLE_R * bl
        d_open = np.hypot(qx - ox, qy - oy) - HOLE_R * (1.0 - bl)
        plug = cov(d_hole) * (1.0 - cov(d_open))  # slug left in the hole: darker metal
        tongue = tongue * (1.0 - 0.18 * plug)
        a_tongue = a_tongue * (1.0 - cov(d_open)) if bl < 1.0 else a_tongue
    else:
        a_tongue = a_tongue * (1.0 - cov(d_hole))
    img = img + a_tongue * (tongue - img)

    if defect.burr_r > 0:
        bx0, by0 = defect.burr_xy
        a = cov(np.hypot(px - bx0, py - by0) - defect.burr_r)
        img = img + a * (250.0 - img)

    if defect.scratch_width > 0:
        x_0, y_0, x_1, y_1 = defect.scratch
        line = cov(_segment(px, py, x_0, y_0, x_1, y_1) - 0.5 * defect.scratch_width)
        on_metal = np.maximum(a_tongue, a_barrel)
        img = img * (1.0 + (defect.scratch_gain - 1.0) * line * on_metal)

    img = img.astype(np.float32)
    sigma = nz.blur * ppu
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img


def photometric(
    img: np.ndarray,
    nz: Nuisance,
    ppu: float,
    x0: float,
    y0: float,
    rng: np.random.Generator,
    noise_scale: float = 1.0,
    camera: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Lighting gradient, brightness/contrast, the camera's own gain map (vignetting, exposure
    drift; 1 for the stills) and sensor noise, at the output scale."""
    h, w = img.shape
    xs = (x0 + (np.arange(w, dtype=np.float32) + 0.5) / ppu)[None, :]
    ys = (y0 + (np.arange(h, dtype=np.float32) + 0.5) / ppu)[:, None]
    light = (
        1.0 + nz.grad[0] * (xs - PART_CENTER[0]) / 18.0 + nz.grad[1] * (ys - PART_CENTER[1]) / 18.0
    )
    out = ((img * light - 128.0) * nz.contrast + 128.0) * nz.gain * camera
    out = out + rng.standard_normal(out.shape, dtype=np.float32) * (nz.noise * noise_scale)
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def still_light(nz: Nuisance, defect: Defect, ss: int = SUPERSAMPLE) -> np.ndarray:
    """The scene at the dataset's 26×36, before photometry and noise (float32)."""
    hi = radiance(nz, defect, ss, 0.0, 0.0, OUT_W * ss, OUT_H * ss)
    return cv2.resize(hi, (OUT_W, OUT_H), interpolation=cv2.INTER_AREA)


def render_still(
    nz: Nuisance, defect: Defect, rng: np.random.Generator, ss: int = SUPERSAMPLE
) -> np.ndarray:
    """One dataset image: uint8 26×36."""
    return to_uint8(photometric(still_light(nz, defect, ss), nz, 1.0, 0.0, 0.0, rng))


def render_still_masked(
    nz: Nuisance, defect: Defect, rng: np.random.Generator, ss: int = SUPERSAMPLE
) -> tuple[np.ndarray, np.ndarray | None]:
    """One dataset image (the same bytes as `render_still`) and its defect mask: uint8 26×36,
    255 where the defective part's light differs from the same part without the defect (same
    nuisance, before photometry and noise) by more than MASK_LEVEL, 0 elsewhere; None for a good
    part. The mask draws nothing from `rng`, so the image is the one `render_still` makes."""
    light = still_light(nz, defect, ss)
    image = to_uint8(photometric(light, nz, 1.0, 0.0, 0.0, rng))
    if defect.label == GOOD:
        return image, None
    return image, defect_mask(light, still_light(nz, Defect(), ss))


def defect_mask(light: np.ndarray, intact: np.ndarray) -> np.ndarray:
    """uint8 0/255: where `light` (a defective part) differs from `intact` (the same part, same
    nuisance, no defect) by more than MASK_LEVEL gray levels."""
    return np.where(np.abs(light - intact) > MASK_LEVEL, 255, 0).astype(np.uint8)
