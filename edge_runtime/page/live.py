"""What the inference loop shares with the page while it runs: the threshold and the last frame.

Both are written by one thread and read by another, and neither may slow the line:
- `ThresholdHolder` — the value a camera reads once per batch (`Camera.threshold_holder`), set by
  the page after a signed-off change is on disk. A lock around a (value, label) pair: a reader
  never sees the value of one version with the label of another, and a frame already being
  judged finishes with the threshold it started with, so none is dropped or judged twice.
- `LiveFrames` — each camera's newest judged frame, kept by reference (`Camera.watchers` hands
  it over: no copy, no drawing, no encoding in the inference loop). The overlay and the JPEG are
  made when a page asks, at the page's pace, at most once per frame however many pages watch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_runtime.overlay import draw
from edge_runtime.preprocess import Roi

FPS_WINDOW_S = 2.0  # the frame rate shown is over the last two seconds
JPEG_QUALITY = 80


class ThresholdHolder:
    """The threshold cameras of one model directory read per batch (see the module doc)."""

    def __init__(self, value: float, label: str = "sidecar") -> None:
        self._lock = threading.Lock()
        self._pair = (float(value), label)

    def get(self) -> tuple[float, str]:
        """(threshold, where it came from) — what the next records will carry."""
        with self._lock:
            return self._pair

    def set(self, value: float, label: str) -> None:
        with self._lock:
            self._pair = (float(value), label)


@dataclass
class _Latest:
    seq: int = 0  # frames seen; 0 = none yet
    # (image, roi, info): replaced whole, so a reader never mixes two frames' parts
    frame: tuple[np.ndarray | None, Roi | None, dict] = (None, None, {})
    times: deque = field(default_factory=lambda: deque(maxlen=256))  # monotonic, per frame
    jpeg: tuple[int, bytes] = (0, b"")  # (seq, bytes) of the last encoding


INFO_KEYS = ("frame", "part_id", "verdict", "score", "threshold", "reason", "late", "captured_at")


class LiveFrames:
    """The newest judged frame of each camera, encoded on demand (see the module doc)."""

    def __init__(self, cameras: list[str]) -> None:
        self._cams = {name: _Latest() for name in cameras}
        self._lock = threading.Lock()  # guards encoding (one per frame) and the fps window

    @property
    def cameras(self) -> list[str]:
        return list(self._cams)

    def watcher(self, camera: str):
        """The callable a Camera calls with (frame, record, roi) after each record."""
        latest = self._cams[camera]

        def watch(frame, rec: dict, roi: Roi | None) -> None:
            info = {k: rec.get(k) for k in INFO_KEYS}
            image = frame.image if frame.image is not None else latest.frame[0]  # keep a picture
            latest.frame = (image, roi, info)
            latest.times.append(time.monotonic())
            latest.seq += 1

        return watch

    def seq(self, camera: str) -> int:
        return self._cams[camera].seq

    def status(self, camera: str) -> dict:
        """Frame count, frame rate over the last seconds, and the newest frame's verdict."""
        latest = self._cams[camera]
        now = time.monotonic()
        recent = [t for t in list(latest.times) if now - t <= FPS_WINDOW_S]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
        age = now - latest.times[-1] if latest.times else None
        return {"seq": latest.seq, "fps": round(fps, 2), "age_s": age, **latest.frame[2]}

    def jpeg(self, camera: str) -> tuple[int, bytes] | None:
        """(seq, JPEG) of the newest frame with the ROI and verdict drawn on; None before one."""
        latest = self._cams[camera]
        seq, (image, roi, info) = latest.seq, latest.frame
        if image is None:
            return None
        with self._lock:
            if latest.jpeg[0] == seq:
                return latest.jpeg
            verdict, threshold = info.get("verdict") or "", info.get("threshold") or 0.0
            shown = draw(image, roi, verdict, info.get("score"), threshold, info.get("reason"))
            ok, buf = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                return None
            latest.jpeg = (seq, buf.tobytes())
            return latest.jpeg
