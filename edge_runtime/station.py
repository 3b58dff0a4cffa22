"""Several cameras in one process (`twinspect run --config station.toml`).

Scheduling, on a 2-core line PC:
- one feeder thread per camera pulls its source's events (a folder is read and decoded there; a
  live camera keeps its own grab thread, and the feeder takes its newest frame) into a small
  queue of its own — a few frames, at least two batches — so decoding overlaps inference and a
  stalled camera holds up nobody;
- one inference loop, this thread, takes from the queues in turn (round robin: one batch of one
  camera, then the next camera), so the cameras share the CPU fairly and onnxruntime never runs
  two sessions at once on two cores that other processes also need;
- one onnxruntime session per model directory, shared by every camera that names it (each
  camera keeps its own ROI, threshold and buffers in its own Inspector over that session).

Each camera keeps its own results file (lock, resume, fsync as for a single run), summary and
part ids. Every camera is checked — source, ROI, results lock, resume — before any results file
is opened for writing, so a mistake in the third camera costs the first two nothing.

A camera that cannot be opened, or is lost beyond max_reconnects, stops on its own (its outage
is recorded; /healthz names it); the other cameras go on, and the run ends with that camera's
exit code (2 or 1). A write that fails (disk full) stops the station, like a single run.
SIGINT/SIGTERM finish the batch in hand, close every camera and print every summary.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cv2

from edge_runtime.camera import Camera, open_camera
from edge_runtime.errors import TwinspectError
from edge_runtime.model import EmbeddingModel, SessionOptions, load_model_dir
from edge_runtime.records import ResultsWriteError
from edge_runtime.runner import (
    RunConfig,
    _check_gui,
    _frozen_heap,
    _signals,
    _Stop,
    check_config,
)
from edge_runtime.sources import READ_TIMEOUT_S, Frame, Outage
from edge_runtime.summary import Summary

QUEUE_FRAMES = 4  # per camera, at least; 2 batches for an offline camera with --batch


@dataclass
class Station:
    """A station file after [defaults] and the command line are applied (station_config)."""

    cameras: list[RunConfig]
    threads: int = 1
    spin: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    opcua_port: int | None = None  # one OPC UA server for every camera (sinks_hook)
    path: str = ""  # the station file, for messages
    notes: list[str] = field(default_factory=list)


class _Feed(threading.Thread):
    """Pulls one camera's events into its queue. Not a daemon: it may be inside OpenCV's reader
    (a video file), which must never be torn down at exit (see sources.py)."""

    def __init__(self, cam: Camera, hub: threading.Condition, stop: _Stop) -> None:
        super().__init__(name=f"twinspect-feed-{cam.name}", daemon=False)
        self.cam = cam
        self.hub = hub
        self.stop = stop
        self.cap = max(QUEUE_FRAMES, 2 * cam.cfg.batch)
        self.q: deque[Frame | Outage] = deque()
        self.halt = False  # set by the loop when the station ends
        self.ended = False  # the feeder returned (source ended, max_frames, stop or error)
        self.error: BaseException | None = None
        self.settled = False  # the loop has drained the queue and set the camera's state

    def _stopped(self) -> bool:
        return self.halt or self.stop()

    def run(self) -> None:
        cfg = self.cam.cfg
        pace = 1.0 / cfg.fps if cfg.fps else 0.0
        next_t = time.monotonic()
        taken = 0
        events = self.cam.source.events(self.cam.done, self._stopped)
        try:
            while not self._stopped():
                if pace:  # before the frame is read, so its capture time is when it is taken
                    next_t += pace
                    while not self._stopped() and time.monotonic() < next_t:
                        time.sleep(min(0.05, max(0.0, next_t - time.monotonic())))
                ev = next(events, None)
                if ev is None:
                    return
                with self.hub:
                    while len(self.q) >= self.cap and not self._stopped():
                        self.hub.wait(0.1)
                    if self._stopped():
                        return
                    self.q.append(ev)
                    self.hub.notify_all()
                if isinstance(ev, Frame):
                    taken += 1
                    if cfg.max_frames is not None and taken >= cfg.max_frames:
                        return
        except BaseException as e:  # handed to the loop: a camera's error ends that camera
            self.error = e
        finally:
            events.close()
            with self.hub:
                self.ended = True
                self.hub.notify_all()

    def take(self) -> list[Frame] | Outage | None:
        """What the loop may judge now (hub held): an outage, or up to a batch of frames — a
        whole batch unless the feeder has ended or an outage follows."""
        if not self.q:
            return None
        if isinstance(self.q[0], Outage):
            return self.q.popleft()
        n = 0
        while n < len(self.q) and isinstance(self.q[n], Frame):
            n += 1
        need = self.cam.cfg.batch
        if n < need and not self.ended and n == len(self.q):
            return None  # an offline camera still filling its batch
        return [self.q.popleft() for _ in range(min(n, need))]


def _settle(feeds: list[_Feed], failures: list[tuple[Camera, BaseException]]) -> None:
    """Mark cameras whose feeder ended and whose queue is drained as done or failed (hub held);
    say at once when a camera fails while others go on."""
    for f in feeds:
        if f.settled or not f.ended or f.q:
            continue
        f.settled = True
        if f.error is None:
            f.cam.status.state = "done"
            continue
        f.cam.status.state, f.cam.status.error = "failed", str(f.error)
        failures.append((f.cam, f.error))
        if isinstance(f.error, TwinspectError) and not all(g.ended for g in feeds):
            print(
                f"twinspect run: {f.cam.name}: stopped: {f.error}; the other cameras go on",
                file=sys.stderr,
                flush=True,
            )


def _schedule(cams: list[Camera], stop: _Stop) -> list[tuple[Camera, BaseException]]:
    """The inference loop (see the module doc); returns the cameras that failed."""
    hub = threading.Condition()
    feeds = [_Feed(cam, hub, stop) for cam in cams]
    failures: list[tuple[Camera, BaseException]] = []
    for f in feeds:
        f.start()
    turn = 0
    try:
        while not stop():
            with hub:
                pick = None
                while pick is None:
                    _settle(feeds, failures)
                    for k in range(len(feeds)):
                        i = (turn + k) % len(feeds)
                        got = feeds[i].take()
                        if got is not None:
                            pick, turn = (feeds[i], got), i + 1
                            break
                    if pick is None:
                        if stop() or all(f.settled for f in feeds):
                            return failures
                        hub.wait(0.1)
                hub.notify_all()  # room in a queue: its feeder may go on
            feed, got = pick
            if isinstance(got, Outage):
                feed.cam.outage(got)
            else:
                feed.cam.judge(got, stop)
        return failures
    finally:
        for f in feeds:
            f.halt = True
        with hub:
            hub.notify_all()
        for f in feeds:  # bounded: a feeder notices halt within a read or open timeout
            f.join(timeout=f.cam.cfg.open_timeout_s + READ_TIMEOUT_S + 1.0)
        for f in feeds:
            if f.error is not None and not isinstance(f.error, TwinspectError):
                raise f.error  # a bug, not a camera fault: let it be seen


def _load_models(st: Station) -> dict[Path, EmbeddingModel]:
    """One session per model directory, loaded (and refused) before any camera is opened."""
    models: dict[Path, EmbeddingModel] = {}
    for cfg in st.cameras:
        key = Path(cfg.model_dir).resolve()
        if key not in models:
            models[key] = load_model_dir(cfg.model_dir, SessionOptions(st.threads, st.spin))
    return models


def run_station(
    st: Station,
    log: IO[str] | None = None,
    stop: _Stop | None = None,
    on_open: Callable[[list[Camera]], None] | None = None,
) -> dict[str, Summary]:
    """Run every camera of the station until all have ended or a signal; print each summary.

    `stop` and `on_open` are for a caller running the station in a thread (the station page):
    its own stop flag, and a call with the opened cameras before the first frame is judged.

    Raises BadInput/BadModel (exit 2) before any results file is written; after the run, the
    error of a camera that failed (exit 2 for one that never opened, 1 for one lost beyond its
    reconnects; the larger when several failed), or the write error that stopped the station.
    """
    from edge_runtime.sinks_hook import check_sinks, open_sinks

    for cfg in st.cameras:
        check_config(cfg)
        check_sinks(cfg, st.opcua_port)
    if st.metrics_port is not None:
        from edge_runtime.metrics import require_prometheus

        require_prometheus("[metrics] / --metrics-port")
    models = _load_models(st)
    if any(cfg.show for cfg in st.cameras):
        _check_gui()
    cams: list[Camera] = []
    server = None
    try:
        for cfg in st.cameras:
            model = models[Path(cfg.model_dir).resolve()]
            try:
                cams.append(open_camera(cfg, model, f"{cfg.camera}: "))
            except TwinspectError as e:
                where = f"{st.path}: {cfg.camera}" if st.path else cfg.camera
                e.args = (f"{where}: {e}",)  # which station file and camera, first
                raise
        opened = open_sinks([cam.cfg for cam in cams], st.opcua_port)
        for cam, sinks in zip(cams, opened, strict=True):
            cam.sinks = sinks
        if st.metrics_port is not None:
            from edge_runtime.metrics import serve

            server = serve(cams, st.metrics_host, st.metrics_port)
        for cam in cams:
            cam.open_output()
        if on_open is not None:
            on_open(cams)
    except BaseException:
        for cam in cams:
            with suppress(TwinspectError):  # the error that stopped the start is the one to say
                cam.close()
        if server is not None:
            server.close()
        raise
    log = log or (sys.stderr if any(c.cfg.out is None for c in cams) else sys.stdout)
    stop = stop if stop is not None else _Stop()
    t0 = time.monotonic()
    failures: list[tuple[Camera, BaseException]] = []
    try:
        with _signals(stop), _frozen_heap():
            failures = _schedule(cams, stop)
    except ResultsWriteError:
        stop.reason = stop.reason or "a failed write to the results"
        raise
    finally:
        close_error = _close_all(cams, stop, time.monotonic() - t0)
        if server is not None:
            server.close()
        if any(cfg.show for cfg in st.cameras):
            cv2.destroyAllWindows()
        for cam in cams:
            print(cam.summary.text(), file=log, flush=True)
        print(_station_line(st, cams, stop), file=log, flush=True)
    if close_error is not None:
        raise close_error
    if failures:
        raise _worst(failures)
    return {cam.name: cam.summary for cam in cams}


def _close_all(cams: list[Camera], stop: _Stop, seconds: float) -> TwinspectError | None:
    """Close every camera even when one fails to flush; the first such failure is returned."""
    first: TwinspectError | None = None
    for cam in cams:
        cam.summary.stopped_by = stop.reason
        cam.summary.seconds = seconds
        try:
            cam.close()
        except TwinspectError as e:
            first = first or e
    return first


def _worst(failures: list[tuple[Camera, BaseException]]) -> TwinspectError:
    """One error for the whole run: each failed camera named, the largest exit code."""
    errors = [(cam, e) for cam, e in failures if isinstance(e, TwinspectError)]
    worst = max(errors, key=lambda ce: ce[1].exit_code)[1]
    text = "; ".join(f"{cam.name}: {e}" for cam, e in errors)
    out = TwinspectError(text)
    out.exit_code = worst.exit_code
    return out


def _station_line(st: Station, cams: list[Camera], stop: _Stop) -> str:
    s = [c.summary for c in cams]
    late = sum(x.late for x in s)
    return (
        f"station {st.path or '(command line)'}: {len(cams)} cameras, frames "
        f"{sum(x.frames for x in s)}: OK {sum(x.ok for x in s)}, NG {sum(x.ng for x in s)}, "
        f"ERROR {sum(x.error for x in s)}, late {late}"
        + (f"; stopped by {stop.reason}" if stop.reason else "")
    )
