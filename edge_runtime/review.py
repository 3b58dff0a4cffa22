"""The review images of a rejected part (`run --save-ng DIR`): its crop and annotated frame,
written in the inspection loop, and its heatmap, made off the loop by a `HeatWorker`.

Why off the loop: a heatmap costs one batch of about 225 embeddings by occlusion
(edge_runtime.heatmap) — 12 ms for the 26×36 model, a few hundred ms for a surface model that
embeds mirror views (`twinspect bench` prints it). A live source keeps only its newest frame
(edge_runtime.sources), so every part that passed the camera while the loop drew a heatmap was
never judged: the tile recording played live (200 parts at 10 fps, a 4-view 120×136 model,
`--save-ng`, a training sharing the 2 cores) had 92 of its 200 parts judged with the heatmaps
drawn in the loop, and all 200 (and all 73 heatmaps) with them drawn behind it. The worker
draws them one at a time behind the line; each finished heatmap becomes a record of its own,
`{"event": "heat", "frame": N, "part_id": …, "saved_heat": PATH, "heat_peak_x": …}`, written
after the frame's record as soon as it is drawn (the camera's writes take turns under a lock).
When more than `HEAT_PENDING` are waiting the part is not queued and its frame record says why
(`heat_error`): the line comes first.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.inspector import Inspector, Judgement
from edge_runtime.overlay import draw, to_bgr
from edge_runtime.preprocess import Roi, crop
from edge_runtime.sources import Frame

HEAT_PENDING = 32  # heatmaps waiting at most; more and a part goes without one


def write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"PNG encoding failed for {path.name}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _failure(folder: Path, e: Exception) -> str:
    msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip()
    return f"{folder}: {msg.splitlines()[-1] if msg else type(e).__name__}"


def review_paths(folder: Path, frame: Frame, prefix: str = "") -> dict[str, Path]:
    """Where a part's review images go: its crop, annotated frame and heatmap. `prefix` (a
    station's camera name) keeps cameras sharing one review folder apart."""
    stem = f"{prefix}{frame.index:06d}_{Path(frame.name).stem}"[:120]
    return {kind: folder / f"{stem}_{kind}.png" for kind in ("crop", "frame", "heat")}


def save_ng(
    paths: dict[str, Path], frame: Frame, roi: Roi | None, j: Judgement, threshold: float
) -> dict:
    """Write the NG crop and the annotated full frame to their `review_paths` (the caller keeps
    them for the heatmap); a failure is returned, never raised."""
    crop_path, full_path = paths["crop"], paths["frame"]
    folder = crop_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_png(crop_path, to_bgr(crop(frame.image, roi)))
        write_png(full_path, draw(frame.image, roi, j.verdict, j.score, threshold))
    except (OSError, cv2.error) as e:
        for p in (crop_path, full_path):  # no half-written review images
            with suppress(OSError):
                p.unlink(missing_ok=True)
        return {"save_error": _failure(folder, e)}
    return {"saved_crop": str(crop_path), "saved_frame": str(full_path)}


def save_heat(path: Path, image: np.ndarray, inspector: Inspector) -> dict:
    """The heatmap overlay PNG and its summary (peak in ROI pixels, area); a failure is
    returned as `heat_error`, never raised."""
    from edge_runtime.heatmap import heat_of, overlay

    model, spec = inspector.model, inspector.spec
    try:
        patch = inspector.patch(image)  # the same ROI crop and fit the verdict came from
        judged = crop(image, inspector.roi)
        heat = heat_of(patch, judged.shape, spec, model.score_batch, model.residual)
        write_png(path, overlay(judged, heat, spec))
    except BadInput as e:  # a part that cannot be judged has no heatmap
        return {"heat_error": str(e)}
    except (OSError, cv2.error) as e:
        with suppress(OSError):
            path.unlink(missing_ok=True)
        return {"heat_error": _failure(path.parent, e)}
    return {"saved_heat": str(path), **heat.summary()}


class HeatWorker:
    """Draws the heatmaps of rejected parts on its own thread (see the module doc) and hands
    each heat record to `emit` from that thread, as soon as it is drawn — an idle line gets its
    last heatmaps too. `submit` never waits; `close` draws what is still queued first. The
    thread is not a daemon (it may be inside onnxruntime or OpenCV when the interpreter exits):
    close joins it."""

    def __init__(
        self, inspector: Inspector, emit: Callable[[dict], None], pending: int = HEAT_PENDING
    ) -> None:
        self.inspector = inspector
        self.emit = emit
        self._todo: queue.Queue = queue.Queue(maxsize=pending)
        self._thread = threading.Thread(target=self._work, name="twinspect-heat")
        self._thread.start()

    def submit(self, path: Path, frame: Frame, base: dict) -> str | None:
        """Queue one part's heatmap; the reason when it was not queued, else None. `base` is
        the start of its heat record (frame, part id, camera)."""
        try:
            self._todo.put_nowait((path, frame.image, base))
        except queue.Full:
            return f"not drawn: {self._todo.maxsize} heatmaps already waiting (the line first)"
        return None

    def _work(self) -> None:
        while (item := self._todo.get()) is not None:
            path, image, base = item
            try:
                extra = save_heat(path, image, self.inspector)
            except Exception as e:  # a heatmap is for review: it never stops the worker
                extra = {"heat_error": f"{type(e).__name__}: {e}"}
            with suppress(Exception):  # results that cannot be written: the loop's write says so
                self.emit({**base, "ts": round(time.time(), 6), **extra})

    def close(self) -> None:
        self._todo.put(None)  # after everything queued: the worker draws those first
        self._thread.join()


def heat_base(frame: Frame, rec: dict) -> dict:
    """The start of a part's heat record: which part it belongs to."""
    keys = ("camera", "part_id")
    return {
        "event": "heat",
        "frame": frame.index,
        "source": frame.name,
        **{k: rec[k] for k in keys if k in rec},
    }
