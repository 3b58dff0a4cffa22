"""What a person sees: the frame with the ROI box, score and verdict drawn on it.

Used by `--save-ng` (for review after the shift) and `--show` (the live window), so both show
the same thing. Drawing works on a copy; the frame being judged is never touched.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_runtime.preprocess import Roi

# BGR; NOVEL (a reject like no known type) in magenta, to be looked at first
COLORS = {"OK": (60, 200, 60), "NG": (40, 40, 230), "NOVEL": (220, 60, 220), "ERROR": (0, 200, 255)}


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A BGR uint8 copy of a gray, BGR, BGRA or 16-bit frame."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image.copy()


def draw(
    image: np.ndarray,
    roi: Roi | None,
    verdict: str,
    score: float | None,
    threshold: float,
    reason: str | None = None,
) -> np.ndarray:
    """The frame with the ROI rectangle and a 'NG 0.231 > 0.150' caption, colored by verdict."""
    out = to_bgr(image)
    h, w = out.shape[:2]
    color = COLORS.get(verdict, (255, 255, 255))
    x, y, rw, rh = (0, 0, w, h) if roi is None else (roi.x, roi.y, roi.w, roi.h)
    thick = max(1, min(h, w) // 160)
    cv2.rectangle(out, (x, y), (x + rw - 1, y + rh - 1), color, thick)
    if score is None:
        text = f"{verdict}: {reason or ''}"[:60]
    else:
        op = ">" if score > threshold else "<="
        text = f"{verdict} {score:.4g} {op} {threshold:.4g}"
    scale = max(0.4, min(h, w) / 480)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = y - 4 if y - th - 6 >= 0 else min(h - 2, y + rh + th + 4)
    cv2.rectangle(out, (x, ty - th - 3), (x + tw + 4, ty + base), (0, 0, 0), -1)
    cv2.putText(out, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out
