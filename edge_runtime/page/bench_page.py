"""`twinspect bench --with-page`: what a connected browser costs the line, in one run.

The page runs in the inspection's process, so a browser watching it takes CPU (and the GIL)
from the inference loop: JPEG encoding, JSON for the events, HTTP. This measures it directly:
per-part latency at batch 1 without any page client, then — same process, same frames, right
after — with the page server running in-process and a client connected that pulls the MJPEG
stream (at the page's cap, STREAM_FPS) and the server-sent events (once a second), while each
judged frame is handed to the live view exactly as `Camera.watchers` hands it in a run.
"""

from __future__ import annotations

import http.client
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edge_runtime.inspector import Inspector

SECONDS = 5.0  # each of the two loops runs about this long (at least --parts parts)
MAX_PARTS = 200_000


class _Client:
    """Two reader threads on 127.0.0.1: the MJPEG stream and the event stream."""

    def __init__(self, port: int, camera: str) -> None:
        self.port, self.stop = port, threading.Event()
        self.counts = {"jpeg_frames": 0, "events": 0, "bytes": 0}
        self.threads = [
            threading.Thread(target=self._pull, args=(f"/api/cameras/{camera}/live.mjpg",
                                                      b"--frame", "jpeg_frames"), daemon=True),
            threading.Thread(target=self._pull, args=("/api/events", b"event: state",
                                                      "events"), daemon=True),
        ]  # fmt: skip

    def _pull(self, path: str, mark: bytes, key: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            tail = b""
            while not self.stop.is_set():
                chunk = resp.read1(65536)
                if not chunk:
                    return
                self.counts["bytes"] += len(chunk)
                self.counts[key] += (tail + chunk).count(mark)
                tail = chunk[-len(mark) :]
        except OSError:
            return
        finally:
            conn.close()

    def __enter__(self) -> _Client:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=6)


def page_cost(
    model_dir: Path,
    inspector: Inspector,
    frames: list,
    parts: int,
    latency,
    seconds: float = SECONDS,
) -> dict:
    """Total p50/p99 (µs) without and with a page client (see the module doc), each over at
    least `parts` parts and about `seconds`, so the client sees tens of frames and events."""
    from edge_runtime.page.app import STREAM_FPS, create_app
    from edge_runtime.page.server import PageServer
    from edge_runtime.page.state import PageState
    from edge_runtime.page.stats import Shifts
    from edge_runtime.runner import RunConfig

    probe = latency(inspector, frames, 500)
    # long enough for the client to see tens of frames and several events, either way
    parts = min(MAX_PARTS, max(parts, int(seconds * 1e6 / max(probe["total"]["mean"], 1.0))))
    without = latency(inspector, frames, parts)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(model_dir=model_dir, source="bench", out=Path(tmp) / "bench.jsonl",
                        camera="bench")  # fmt: skip
        state = PageState([cfg], Path(tmp) / "review", Shifts.parse("06:00"))
        server = PageServer(create_app(state, "bench-token-not-used-here"), "127.0.0.1", 0,
                            state.closing)  # fmt: skip
        server.start()
        watch, roi = state.live.watcher("bench"), inspector.roi

        def hand_over(image: np.ndarray, j) -> None:
            """The live view's hand-over after each part, as Camera.watchers does per record."""
            rec = {"verdict": j.verdict, "score": j.score, "threshold": inspector.threshold}
            watch(SimpleNamespace(image=image), rec, roi)

        try:
            with _Client(server.port, "bench") as client:
                while client.counts["events"] == 0 and client.threads[1].is_alive():
                    client.stop.wait(0.05)  # connected before timing starts
                with_page = latency(inspector, frames, parts, after=hand_over)
            counts = dict(client.counts)
        finally:
            server.close()
    return {
        "client": f"MJPEG stream (≤ {STREAM_FPS:g} frames/s) + server-sent events (1/s)",
        "without": {k: without["total"][k] for k in ("p50", "p99")},
        "with": {k: with_page["total"][k] for k in ("p50", "p99")},
        "parts": parts,
        **counts,
    }
