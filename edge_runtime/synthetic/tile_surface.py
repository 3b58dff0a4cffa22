"""The benign look of a photographed tile surface: crop size, grain, machining marks, lighting.

Everything here is variation a good part may show. It is deliberately strong — bright and dark
lighting bands across a curved surface, vignetting, shading, grain and machining marks of random
direction and pitch, a sliver of the fixture along a badly aligned crop edge, tiny edge nicks —
so that comparing raw pixels with an average good part (or its principal components) cannot
separate good from defective, while a person still sees every defect (see tile_defects).

The surface is built as *albedo* (relative material brightness, 1 = nominal) times *light*
(relative illumination); defects edit the albedo or remove material before the light is applied,
so they are lit like the surface around them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SIDE_PX = (105, 632)  # image side range in pixels, like the photographed set
ASPECT = (0.4, 2.7)  # width / height range
PREVIEW_PX = 128  # a person must see every defect with the image shrunk to fit this square


def sample_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of one crop: aspect log-uniform over ASPECT, then the geometric-mean side
    log-uniform over what keeps both sides inside SIDE_PX (so small and large crops of every
    shape occur, and no label can be guessed from the size)."""
    lo_s, hi_s = SIDE_PX
    aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    ra = math.sqrt(aspect)
    g_lo = max(lo_s * ra, lo_s / ra)
    g_hi = min(hi_s / ra, hi_s * ra)
    g = math.exp(rng.uniform(math.log(g_lo), math.log(g_hi)))
    w = int(np.clip(round(g * ra), lo_s, hi_s))
    h = int(np.clip(round(g / ra), lo_s, hi_s))
    return h, w


def unit_px(h: int, w: int) -> float:
    """One pixel of the PREVIEW_PX-fit view, in pixels of this image: defect sizes are given in
    this unit so the subtle end stays visible however large the crop."""
    return max(h, w) / PREVIEW_PX


@dataclass(frozen=True)
class Look:
    """Per-part constants that good parts vary in (drawn once per image)."""

    base: float  # nominal surface gray
    background: float  # gray of the fixture behind the tile (seen through breaks)
    grain_dir: float  # radians
    grain_len: float  # px along the grain
    grain_amp: float  # relative albedo σ
    noise: float  # sensor noise σ, gray levels
    blur: float  # defocus σ, px


def sample_look(rng: np.random.Generator, difficulty: float) -> Look:
    d = float(difficulty)
    u = rng.uniform
    return Look(
        base=float(u(75.0, 150.0)),
        background=float(u(12.0, 40.0)),
        grain_dir=float(u(0.0, math.pi)),
        grain_len=float(u(6.0, 40.0)),
        grain_amp=float(u(0.025, 0.07) * d),
        noise=float(u(1.5, 5.0) * d),
        blur=float(u(0.3, 0.9) * d),
    )


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (ys as a column, xs as a row), float32."""
    return (
        np.arange(h, dtype=np.float32)[:, None] + np.float32(0.5),
        np.arange(w, dtype=np.float32)[None, :] + np.float32(0.5),
    )


def directional_noise(
    rng: np.random.Generator, h: int, w: int, angle: float, length: float, width: float
) -> np.ndarray:
    """Unit-σ noise streaked along `angle`: box-blurred `length` px along one axis of a square
    canvas, Gaussian `width` px across, then rotated into the h×w frame. Cheap at any size."""
    d = math.ceil(math.hypot(h, w)) + 4
    n = rng.standard_normal((d, d), dtype=np.float32)
    n = cv2.blur(n, (max(1, round(length)), 1))
    if width > 0.3:
        k = 2 * math.ceil(3 * width) + 1
        n = cv2.GaussianBlur(n, (1, k), sigmaX=0, sigmaY=width)
    m = cv2.getRotationMatrix2D((d / 2, d / 2), -math.degrees(angle), 1.0)
    m[0, 2] -= (d - w) / 2
    m[1, 2] -= (d - h) / 2
    out = cv2.warpAffine(n, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out / np.float32(out.std() + 1e-6)


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Unit-ish σ low-frequency field: a cells×cells random grid, bicubic up to h×w."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def machining_marks(rng: np.random.Generator, h: int, w: int, grain_dir: float) -> np.ndarray:
    """Grinding/turning marks: periodic grooves of random pitch, straight or gently arced (the
    wheel's radius), mostly along the grain, wobbling; plus a few straight full-length lines.
    Relative albedo, roughly ±1 before scaling."""
    ys, xs = grid(h, w)
    diag = math.hypot(h, w)
    ang = grain_dir + (rng.normal(0.0, 0.15) if rng.uniform() < 0.75 else rng.uniform(0, math.pi))
    nx, ny = -math.sin(ang), math.cos(ang)  # across the marks
    pitch = math.exp(rng.uniform(math.log(3.0), math.log(22.0)))
    if rng.uniform() < 0.5:  # arcs around a far centre
        r0 = diag * rng.uniform(0.8, 5.0)
        cx, cy = w / 2 - nx * r0, h / 2 - ny * r0
        across = np.sqrt((xs - np.float32(cx)) ** 2 + (ys - np.float32(cy)) ** 2)
    else:
        across = xs * np.float32(nx) + ys * np.float32(ny)
    along = xs * np.float32(ny) - ys * np.float32(nx)
    wob_p = rng.uniform(40.0, 200.0)
    phase = (2 * math.pi / pitch) * across + np.float32(rng.uniform(0.6, 2.0)) * np.sin(
        along * np.float32(2 * math.pi / wob_p) + np.float32(rng.uniform(0, 2 * math.pi))
    )
    marks = np.sin(phase) + np.float32(rng.uniform(0.0, 0.5)) * np.sin(2 * phase + 1.0)
    marks = marks * (0.7 + 0.3 * smooth_field(rng, h, w, 3))
    # a few isolated straight lines along the marks (a tool dragged across): benign
    for _ in range(int(rng.integers(0, 4))):
        c = rng.uniform(-0.5, 0.5) * diag + (w / 2) * nx + (h / 2) * ny
        lin = xs * np.float32(nx) + ys * np.float32(ny) - np.float32(c)
        width = rng.uniform(0.6, 1.6)
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        marks = marks + np.float32(sign * rng.uniform(1.0, 2.5)) * np.exp(-((lin / width) ** 2))
    return marks.astype(np.float32)


def light_field(rng: np.random.Generator, h: int, w: int, difficulty: float) -> np.ndarray:
    """Relative illumination: bright/dark bands across the curved surface, a gradient,
    off-centre vignetting and low-frequency shading. ~1 on average, from ~0.35 to ~1.9."""
    d = float(difficulty)
    ys, xs = grid(h, w)
    half_diag = 0.5 * math.hypot(h, w)
    th = rng.uniform(0, math.pi)
    t = ((xs - w / 2) * np.float32(math.cos(th)) + (ys - h / 2) * np.float32(math.sin(th))) / (
        np.float32(half_diag)
    )
    light = np.float32(1.0) + np.float32(rng.uniform(-0.25, 0.25) * d) * t
    for _ in range(int(rng.integers(1, 4))):
        c, width = rng.uniform(-1.1, 1.1), rng.uniform(0.08, 0.5)
        amp = rng.uniform(0.15, 0.55) if rng.uniform() < 0.6 else -rng.uniform(0.1, 0.35)
        light = light + np.float32(amp * d) * np.exp(-(((t - np.float32(c)) / width) ** 2))
    vx, vy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7)
    r2 = ((xs - np.float32(vx)) ** 2 + (ys - np.float32(vy)) ** 2) / np.float32(half_diag**2)
    light = light * (np.float32(1.0) - np.float32(rng.uniform(0.0, 0.35) * d) * r2)
    light = light * (1.0 + np.float32(rng.uniform(0.03, 0.10) * d) * smooth_field(rng, h, w, 4))
    return np.maximum(light, np.float32(0.3))


def bevels(rng: np.random.Generator, h: int, w: int, difficulty: float) -> np.ndarray:
    """The tile's chamfered edges: a narrow brighter or darker band along some borders.
    Multiplicative light factor."""
    ys, xs = grid(h, w)
    out = np.ones((h, w), np.float32)
    dist = (ys, xs, h - ys, w - xs)  # to top, left, bottom, right
    for k in range(4):
        if rng.uniform() < 0.4:
            width = rng.uniform(0.008, 0.03) * min(h, w) + 1.0
            amp = rng.uniform(-0.35, 0.45) * difficulty
            out = out * (1.0 + np.float32(amp) * np.exp(-dist[k] / np.float32(width)))
    return out


def benign_missing(rng: np.random.Generator, h: int, w: int, difficulty: float) -> np.ndarray:
    """Coverage (0..1) of the fixture showing through where there is no tile that a good part may
    have: a straight sliver along one crop edge (the crop was not quite aligned) and tiny nicks in
    the edge, well under the smallest break (see tile_defects.BREAK_SIZE)."""
    ys, xs = grid(h, w)
    u = unit_px(h, w)
    miss = np.zeros((h, w), np.float32)
    if rng.uniform() < 0.3 * min(1.0, difficulty):
        side = int(rng.integers(0, 4))
        size = (h, w, h, w)[side]  # the sliver's width scales with the side it eats into
        depth = rng.uniform(1.0, 0.035 * size)
        tilt = rng.uniform(-0.01, 0.01)
        dist = (ys, xs, h - ys, w - xs)[side]
        along = (xs, ys, xs, ys)[side]
        edge = depth + tilt * (along - along.mean())
        miss = np.maximum(miss, np.clip(edge - dist + 0.5, 0.0, 1.0))
    for _ in range(int(rng.poisson(0.6 * difficulty))):
        side = int(rng.integers(0, 4))
        length = (w, h, w, h)[side]
        at = rng.uniform(0.05, 0.95) * length
        depth, half = rng.uniform(0.4, 1.3) * u, rng.uniform(0.8, 2.0) * u
        dist = (ys, xs, h - ys, w - xs)[side]
        along = (xs, ys, xs, ys)[side]
        prof = depth * np.clip(1.0 - np.abs(along - np.float32(at)) / np.float32(half), 0, 1)
        miss = np.maximum(miss, np.clip(prof - dist + 0.5, 0.0, 1.0))
    return miss


def fixture(rng: np.random.Generator, h: int, w: int, gray: float) -> np.ndarray:
    """The dark fixture behind the tile: its own faint texture."""
    return np.float32(gray) * (1.0 + 0.15 * smooth_field(rng, h, w, 5)) + np.float32(
        3.0
    ) * rng.standard_normal((h, w), dtype=np.float32)


def camera(img: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Defocus, then sensor noise; float32 gray levels (not yet quantized)."""
    if look.blur > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), look.blur)
    return img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(look.noise)
