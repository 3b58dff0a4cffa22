"""Synthetic anomalies made on the fly from good images, so the twin learns local dissimilarity
from more than the handful of defects a line has collected (or none at all).

The corruptions are generic, not copies of any generator's defect kinds: thin scratches, pits
and blobs, a patch of the part moved elsewhere (CutPaste), a stain under a smooth random mask,
local blur, and a chip out of the part's edge. Each is sized relative to the image and drawn
from subtle to obvious, inside the part's content (never in the borders `pad` added), so the
network must find *where* the part differs, not how big it is.

Pure numpy + OpenCV on uint8 N×H×W(×C) batches; one seeded Generator drives everything.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

KINDS = ("scratch", "pit", "cutpaste", "stain", "blur", "chip")


def content_box(img: np.ndarray, pad_value: int | None) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the rows/columns not entirely equal to the pad value; the whole
    image when there is none (mirrored borders look like the part)."""
    g = img if img.ndim == 2 else img[..., 0]
    if pad_value is None:
        return 0, 0, g.shape[0], g.shape[1]
    rows = np.flatnonzero((g != pad_value).any(axis=1))
    cols = np.flatnonzero((g != pad_value).any(axis=0))
    if rows.size < 4 or cols.size < 4:
        return 0, 0, g.shape[0], g.shape[1]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _delta(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A signed intensity change: darker or brighter, subtle to obvious."""
    return float(rng.uniform(lo, hi) * rng.choice((-1.0, 1.0)))


def _apply(img: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    m = mask.astype(np.float32)
    if img.ndim == 3:
        m = m[..., None]
    return np.clip(img.astype(np.float32) + delta * m, 0, 255).astype(np.uint8)


def _point(rng, box) -> tuple[int, int]:
    y0, x0, y1, x1 = box
    return int(rng.integers(x0, x1)), int(rng.integers(y0, y1))


def scratch(img, rng, box):
    y0, x0, y1, x1 = box
    side = min(y1 - y0, x1 - x0)
    mask = np.zeros(img.shape[:2], np.uint8)
    p = np.array(_point(rng, box), np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [p.copy()]
    for _ in range(int(rng.integers(1, 4))):
        angle += rng.normal(0, 0.5)
        p = p + rng.uniform(0.1, 0.3) * side * np.array([np.cos(angle), np.sin(angle)])
        pts.append(p.copy())
    width = max(1, round(side * rng.uniform(0.008, 0.03)))
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, width, cv2.LINE_AA)
    return _apply(img, mask, _delta(rng, 25, 110))


def pit(img, rng, box):
    y0, x0, y1, x1 = box
    side = min(y1 - y0, x1 - x0)
    mask = np.zeros(img.shape[:2], np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        r = max(1, round(side * rng.uniform(0.012, 0.05)))
        axes = (r, max(1, round(r * rng.uniform(0.6, 1.0))))
        cv2.ellipse(mask, _point(rng, box), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)
    return _apply(img, soft, _delta(rng, 35, 140))


def cutpaste(img, rng, box):
    y0, x0, y1, x1 = box
    h, w = y1 - y0, x1 - x0
    ph = max(3, round(h * rng.uniform(0.08, 0.25)))
    pw = max(3, round(w * rng.uniform(0.08, 0.25)))
    sy, sx = int(rng.integers(y0, y1 - ph + 1)), int(rng.integers(x0, x1 - pw + 1))
    patch = img[sy : sy + ph, sx : sx + pw].copy()
    if rng.random() < 0.5:
        patch = patch[::-1]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    ty, tx = int(rng.integers(y0, y1 - ph + 1)), int(rng.integers(x0, x1 - pw + 1))
    out = img.copy()
    out[ty : ty + ph, tx : tx + pw] = np.clip(
        patch.astype(np.float32) + _delta(rng, 0, 40), 0, 255
    ).astype(np.uint8)
    return out


def _blob_mask(img, rng, box, lo=0.1, hi=0.3) -> np.ndarray:
    """A smooth irregular region: blurred noise thresholded inside an ellipse."""
    y0, x0, y1, x1 = box
    side = min(y1 - y0, x1 - x0)
    r = max(2, round(side * rng.uniform(lo, hi) / 2))
    mask = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(mask, _point(rng, box), (r, max(2, round(r * rng.uniform(0.5, 1)))),
                rng.uniform(0, 180), 0, 360, 1.0, -1)  # fmt: skip
    noise = cv2.GaussianBlur(rng.random(img.shape[:2]).astype(np.float32), (0, 0), max(1, r / 3))
    mask *= noise > np.median(noise)
    return cv2.GaussianBlur(mask, (0, 0), max(0.8, r / 6))


def stain(img, rng, box):
    return _apply(img, _blob_mask(img, rng, box), _delta(rng, 15, 60))


def blur(img, rng, box):
    mask = _blob_mask(img, rng, box, 0.15, 0.4)
    sigma = max(1.0, min(img.shape[:2]) * rng.uniform(0.01, 0.04))
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    m = mask if img.ndim == 2 else mask[..., None]
    return (img * (1 - m) + blurred * m).astype(np.uint8)


def chip(img, rng, box):
    y0, x0, y1, x1 = box
    side = min(y1 - y0, x1 - x0)
    r = max(2, round(side * rng.uniform(0.04, 0.15)))
    edge = int(rng.integers(4))
    cx = int(rng.integers(x0, x1)) if edge < 2 else (x0 if edge == 2 else x1 - 1)
    cy = int(rng.integers(y0, y1)) if edge >= 2 else (y0 if edge == 0 else y1 - 1)
    n = int(rng.integers(5, 9))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.5, 1.0, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_AA)
    out = img.copy()
    fill = rng.uniform(0, 60)
    out[mask > 0] = np.uint8(fill)
    return out


MAKERS: dict[str, Callable] = {
    "scratch": scratch,
    "pit": pit,
    "cutpaste": cutpaste,
    "stain": stain,
    "blur": blur,
    "chip": chip,
}


def synthesize(
    images: np.ndarray, rng: np.random.Generator, pad_value: int | None = 0, kinds=KINDS
) -> np.ndarray:
    """One random anomaly in each image (a copy); the kinds in equal shares."""
    out = np.empty_like(images)
    picks = rng.integers(len(kinds), size=len(images))
    for i, img in enumerate(images):
        box = content_box(img, pad_value)
        made = MAKERS[kinds[picks[i]]](img, rng, box)
        y0, x0, y1, x1 = box  # strokes and chips that run past the part stop at its edge
        out[i] = img
        out[i, y0:y1, x0:x1] = made[y0:y1, x0:x1]
    return out
