"""The recording of the line: one triggered camera frame per part on the belt.

The frame is 320×240 at 3 px per dataset pixel; the part sits at a fixed region of interest of
108×78 = 3 × (36×26) px, so the runtime's crop + INTER_AREA resize gives the dataset's geometry.
The scene is rendered by the very same `render.radiance` at 6 px/unit (as the stills), shrunk 2×
to the frame; then the camera adds what stills do not have: vignetting, a slow exposure drift over
the recording, more (finer) sensor noise, and JPEG compression.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_runtime.preprocess import Roi
from edge_runtime.synthetic.defects import Defect
from edge_runtime.synthetic.render import (
    SUPERSAMPLE,
    Nuisance,
    belt_only,
    photometric,
    radiance,
    to_uint8,
)

FRAME_W, FRAME_H = 320, 240
ROI_SCALE = 3  # frame px per dataset px
ROI = Roi(x=106, y=81, w=36 * ROI_SCALE, h=26 * ROI_SCALE)
FRAME_SS = SUPERSAMPLE // ROI_SCALE  # render px per frame px (6 px/unit, like the stills)
# Noise at the frame scale: a 3×3 area average shrinks i.i.d. noise 3×; JPEG smooths some of it.
FRAME_NOISE = 2.6
JPEG_QUALITY = 85
FPS = 10.0
PART_MARGIN = 15  # frame px around the ROI rendered at full detail (fixture play ≤ 6 px)


def camera_gain(index: int, n_frames: int, difficulty: float, phase: float) -> np.ndarray:
    """Vignetting × exposure drift for frame `index`: float32 240×320."""
    ys, xs = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    r2 = ((xs - FRAME_W / 2) ** 2 + (ys - FRAME_H / 2) ** 2) / (
        (FRAME_W / 2) ** 2 + (FRAME_H / 2) ** 2
    )
    vignette = 1.0 - 0.30 * r2
    t = index / max(n_frames, 1)
    drift = 1.0 + 0.07 * difficulty * math.sin(2 * math.pi * 0.8 * t + phase)
    return vignette * np.float32(drift)


def render_frame(
    nz: Nuisance,
    defect: Defect,
    rng: np.random.Generator,
    index: int,
    n_frames: int,
    difficulty: float = 1.0,
    drift_phase: float = 0.0,
) -> np.ndarray:
    """One camera frame: uint8 240×320 gray, the part at `ROI`."""
    x0, y0 = -ROI.x / ROI_SCALE, -ROI.y / ROI_SCALE  # frame's top-left in dataset units
    belt_shift = 7.3 * index  # the belt moves between triggers
    lo = belt_only(nz, ROI_SCALE, x0, y0, FRAME_W, FRAME_H, belt_shift).copy()
    # the part (and the wire to the frame's edge) at the stills' 6 px/unit, shrunk 2×
    wx, wy = ROI.x - PART_MARGIN, ROI.y - PART_MARGIN
    ww, wh = FRAME_W - wx, ROI.h + 2 * PART_MARGIN
    ppu = ROI_SCALE * FRAME_SS
    hi = radiance(
        nz,
        defect,
        ppu,
        (wx - ROI.x) / ROI_SCALE,
        (wy - ROI.y) / ROI_SCALE,
        ww * FRAME_SS,
        wh * FRAME_SS,
        belt_shift,
    )
    lo[wy : wy + wh, wx : wx + ww] = cv2.resize(hi, (ww, wh), interpolation=cv2.INTER_AREA)
    gain = camera_gain(index, n_frames, difficulty, drift_phase)
    frame = to_uint8(photometric(lo, nz, ROI_SCALE, x0, y0, rng, FRAME_NOISE, gain))
    _, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return cv2.imdecode(jpg, cv2.IMREAD_GRAYSCALE)
