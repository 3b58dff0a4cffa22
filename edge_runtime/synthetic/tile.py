"""The tile product: photographed surface crops of magnetic tiles, good and defective.

Modelled on the public "magnetic tile surface defect" photographs: gray crops of very different
sizes (~100–630 px a side) and shapes (aspect 0.4–2.7), a machined surface under uneven light,
and defects only a few pixels wide. One image = `render_still`; the camera recording puts the same
surface, at one fixed size, on a fixture in a fixed ROI of a 640×480 frame (`render_frame`).

The random draws of the benign look come first and in a fixed order, so whether a part is
defective changes only what is drawn after them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.preprocess import Roi
from edge_runtime.synthetic import tile_surface as ts
from edge_runtime.synthetic.tile_defects import GOOD, Surface, draw_defect

FRAME_W, FRAME_H = 640, 480
ROI = Roi(x=160, y=128, w=320, h=224)  # the tile's pocket in the fixture
FIXTURE_GRAY = 30.0
PLAY_PX = 3  # the tile sits in its pocket to within ±PLAY_PX
FPS = 10.0
JPEG_QUALITY = 85


@dataclass
class TileRender:
    """One tile before it is composed with its background and seen by a camera."""

    tile: np.ndarray  # float32 h×w, lit tile radiance (gray levels)
    missing: np.ndarray  # float32 h×w, 0..1 where the fixture shows instead
    light: np.ndarray  # float32 h×w, the illumination (the fixture is lit by it too)
    mask: np.ndarray | None  # bool h×w for a defect, None for a good part
    look: ts.Look


def tile_radiance(
    rng: np.random.Generator,
    label: str,
    difficulty: float = 1.0,
    size: tuple[int, int] | None = None,
) -> TileRender:
    """The tile surface of one part (`size` = (h, w), or drawn like the photographed crops)."""
    h, w = size if size is not None else ts.sample_size(rng)
    look = ts.sample_look(rng, difficulty)
    grain = ts.directional_noise(rng, h, w, look.grain_dir, look.grain_len, 0.8)
    marks = ts.machining_marks(rng, h, w, look.grain_dir)
    marks_amp = rng.uniform(0.015, 0.05) * difficulty
    light = ts.light_field(rng, h, w, difficulty) * ts.bevels(rng, h, w, difficulty)
    missing = ts.benign_missing(rng, h, w, difficulty)
    albedo = 1.0 + np.float32(look.grain_amp) * grain + np.float32(marks_amp) * marks
    surf = Surface(albedo, missing, ts.unit_px(h, w), look.grain_dir, look.grain_len)
    mask = None if label == GOOD else draw_defect(rng, label, surf)
    tile = np.float32(look.base) * surf.albedo * light
    return TileRender(tile, surf.missing, light, mask, look)


def _compose(r: TileRender, background: np.ndarray) -> np.ndarray:
    """The tile where it is, the (dimmer-lit) fixture where material is missing."""
    bg = background * (0.5 + 0.5 * r.light)
    return r.tile + r.missing * (bg - r.tile)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_still(
    rng: np.random.Generator, label: str, difficulty: float = 1.0
) -> tuple[np.ndarray, np.ndarray | None]:
    """One photographed crop: (uint8 h×w gray image, uint8 0/255 mask or None for good)."""
    r = tile_radiance(rng, label, difficulty)
    h, w = r.tile.shape
    img = ts.camera(_compose(r, ts.fixture(rng, h, w, r.look.background)), r.look, rng)
    mask = None if r.mask is None else (r.mask.astype(np.uint8) * 255)
    return to_uint8(img), mask


def camera_gain(index: int, n_frames: int, difficulty: float, phase: float) -> np.ndarray:
    """The line camera's vignetting × slow exposure drift over the recording (float32 H×W)."""
    ys, xs = ts.grid(FRAME_H, FRAME_W)
    r2 = ((xs - FRAME_W / 2) ** 2 + (ys - FRAME_H / 2) ** 2) / np.float32(
        (FRAME_W / 2) ** 2 + (FRAME_H / 2) ** 2
    )
    t = index / max(n_frames, 1)
    drift = 1.0 + 0.08 * difficulty * math.sin(2 * math.pi * 0.8 * t + phase)
    return (1.0 - 0.35 * r2) * np.float32(drift)


def render_frame(
    rng: np.random.Generator,
    label: str,
    index: int,
    n_frames: int,
    difficulty: float = 1.0,
    drift_phase: float = 0.0,
) -> np.ndarray:
    """One camera frame: uint8 480×640 gray, the tile (ROI-sized) in its pocket at `ROI`."""
    r = tile_radiance(rng, label, difficulty, size=(ROI.h, ROI.w))
    frame = ts.fixture(rng, FRAME_H, FRAME_W, FIXTURE_GRAY)
    dx, dy = (int(v) for v in rng.integers(-PLAY_PX, PLAY_PX + 1, 2))
    x0, y0 = ROI.x + dx, ROI.y + dy
    # a soft shadow of the tile on the fixture, down and to the right
    shadow = np.zeros((FRAME_H, FRAME_W), np.float32)
    shadow[y0 + 4 : y0 + ROI.h + 4, x0 + 4 : x0 + ROI.w + 4] = 1.0
    frame *= 1.0 - 0.4 * cv2.GaussianBlur(shadow, (0, 0), 3.0)
    win = (slice(y0, y0 + ROI.h), slice(x0, x0 + ROI.w))
    frame[win] = _compose(r, frame[win].copy())
    frame = ts.camera(frame, r.look, rng) * camera_gain(index, n_frames, difficulty, drift_phase)
    _, jpg = cv2.imencode(".jpg", to_uint8(frame), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE)
