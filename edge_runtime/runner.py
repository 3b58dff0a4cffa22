"""The run loop of `twinspect run` on one source: a whole shift without losing anything.

Order matters: the model is loaded (and refused, exit 2) before any source is opened; the output
is opened (and a resumed file repaired) before the first frame. Every frame gives exactly one
record, written and flushed before the next frame is taken. SIGINT/SIGTERM finish the frame in
hand, flush, print the summary, and exit 0. A live source that cannot be reconnected within
--max-reconnects attempts ends the run with exit 1 after its outage is recorded.

What happens to one camera's frames (records, part ids, deadlines, review images, metrics,
sinks) is in `camera.py`; several cameras in one process are `station.py`. This module is the
single-source loop: it pulls frames from the source in this thread, so a replay is judged in
order at the speed the inspector takes them, and `--batch`/`--fps`/`--max-frames` act exactly.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2

from edge_runtime.camera import (  # re-exported: the names callers used to find here
    WHOLE_FRAME_FACTOR,
    WINDOW,
    Camera,
    open_camera,
    resolve_roi,
    save_ng,
    whole_frame_warning,
)
from edge_runtime.errors import BadInput
from edge_runtime.inspector import BLANK_STD
from edge_runtime.model import SessionOptions, load_model_dir
from edge_runtime.parts import PartPolicy
from edge_runtime.preprocess import Roi
from edge_runtime.records import ResultsWriteError
from edge_runtime.sources import OPEN_TIMEOUT_S, Frame, Outage
from edge_runtime.summary import Summary

__all__ = [
    "WHOLE_FRAME_FACTOR",
    "WINDOW",
    "RunConfig",
    "Summary",
    "resolve_roi",
    "run",
    "save_ng",
    "whole_frame_warning",
]

DEFAULT_CAMERA = "cam0"


@dataclass
class RunConfig:
    """One camera's settings; `twinspect run` options, or a station file's camera after its
    [defaults] and the command line are applied (see station_config)."""

    model_dir: Path
    source: str
    out: Path | None = None  # None: stdout
    fmt: str = "jsonl"  # or "csv"
    roi: Roi | None = None  # None: the sidecar's, else the recording's, else the whole frame
    threshold: float | None = None  # None: the sidecar's
    threshold_from: str = ""  # where an explicit threshold came from ("" = the command line)
    batch: int = 1
    resume: bool = False
    force: bool = False  # resume even if source/model/threshold/ROI differ from the recorded run
    overwrite: bool = False
    fsync: str = "batch"  # every | batch | off: see records.FsyncPolicy
    save_ng: Path | None = None
    show: bool = False
    threads: int = 1
    spin: bool = False
    live: bool = False  # play a video file like a camera
    max_reconnects: int = 10
    open_timeout_s: float = OPEN_TIMEOUT_S  # opening (and reopening) a camera or stream
    reconnect_wait_s: float = 0.5
    max_frames: int | None = None
    fps: float | None = None  # pace an offline source like a line
    blank_std: float = BLANK_STD
    camera: str = DEFAULT_CAMERA  # its name in records, metrics and /healthz
    part_id_from: str = "frame"  # frame | filename: see parts.PartPolicy
    deadline_ms: float | None = None  # capture → decision; None: no deadline
    fail_safe: str = "NG"  # the verdict of a part decided late: NG | ERROR | OK
    stale_after_s: float = 5.0  # /healthz: a camera without a frame this long is stale
    # mqtt://…, modbus://…, opcua://…, http(s)://…, or a mapping {"url": …, option: …} as
    # open_sink takes it (a station file's webhook with token_env/token_file): sinks_hook
    sinks: tuple[str | dict, ...] = ()
    mqtt: str | None = None  # --mqtt mqtt://HOST:PORT/PREFIX: one more sink URL
    modbus: str | None = None  # --modbus HOST:PORT → modbus://HOST:PORT
    opcua_port: int | None = None  # --opcua-port N (a single run; a station's is Station's)
    metrics_port: int | None = None  # serve /metrics and /healthz (a single run; see station)
    metrics_host: str = "127.0.0.1"


def check_config(cfg: RunConfig) -> None:
    """What can be refused before the model is loaded."""
    if cfg.batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {cfg.batch}")
    if cfg.fmt not in ("jsonl", "csv"):
        raise BadInput(f"unknown output format {cfg.fmt!r}")
    PartPolicy(cfg.camera, cfg.part_id_from, cfg.deadline_ms, cfg.fail_safe)  # refuses bad ones


class _Stop:
    """Set by SIGINT/SIGTERM (or the window's q/Esc): the loop finishes the frame in hand."""

    def __init__(self) -> None:
        self.reason = ""

    def __call__(self) -> bool:
        return bool(self.reason)


@contextmanager
def _signals(stop: _Stop):
    def handler(signum, _frame):
        stop.reason = signal.Signals(signum).name

    old = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (a library caller's worker): no handlers
        pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextmanager
def _frozen_heap():
    """Keep the garbage collector's full passes off the line while the loop runs.

    Everything alive when the loop starts — models, sources, sinks — lives as long as the run.
    An OPC UA server's address space alone is ~450,000 Python objects, and a full collection
    walks them all while holding every thread: 250–540 ms measured on a 2-core line PC (while
    `make soak` profiled a station), a stall a 250 ms deadline sees as late parts on every
    camera at once. gc.freeze() takes them out of every later collection, so the rare full
    pass during the run only walks what the run itself made; they are handed back (unfreeze)
    when the loop ends, for a library caller.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _check_gui() -> None:
    """--show needs an OpenCV with a GUI backend and a display; say so in one line."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise BadInput("--show needs a display (DISPLAY is not set); drop --show or use --save-ng")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise BadInput(
            "--show needs an OpenCV build with GUI support; this one has none "
            "(opencv-python-headless). Install opencv-python, or drop --show and use --save-ng"
        ) from None


def run(cfg: RunConfig, log: IO[str] | None = None) -> Summary:
    """Inspect every frame of cfg.source; returns the summary (also printed to `log`).

    Raises BadModel/BadInput (exit 2) before opening the source, RunFailed (exit 1) when a live
    source stays down beyond --max-reconnects (after recording the outage and the summary).
    """
    from edge_runtime.sinks_hook import check_sinks, open_sinks

    check_config(cfg)
    check_sinks(cfg)
    if cfg.metrics_port is not None:
        from edge_runtime.metrics import require_prometheus

        require_prometheus("--metrics-port")  # before the model is loaded: one line, exit 2
    model = load_model_dir(cfg.model_dir, SessionOptions(cfg.threads, cfg.spin))
    if cfg.show:
        _check_gui()
    cam = open_camera(cfg, model)
    server = None
    try:
        (cam.sinks,) = open_sinks([cfg])
        if cfg.metrics_port is not None:
            from edge_runtime.metrics import serve

            server = serve([cam], cfg.metrics_host, cfg.metrics_port)
        cam.open_output()
    except BaseException:
        if server is not None:
            server.close()
        cam.close()
        raise
    log = log or (sys.stderr if cfg.out is None else sys.stdout)
    stop = _Stop()
    t0 = time.monotonic()
    try:
        with _signals(stop), _frozen_heap():
            _loop(cfg, cam, stop)
        cam.status.state = "done"
    except ResultsWriteError:
        stop.reason = stop.reason or "a failed write to the results"
        raise
    except BaseException as e:
        cam.status.state, cam.status.error = "failed", str(e)
        raise
    finally:
        cam.summary.stopped_by = stop.reason
        cam.summary.seconds = time.monotonic() - t0
        try:
            cam.close()  # may fail to fsync the last records: still unlock and summarize
        finally:
            if server is not None:
                server.close()
            if cfg.show:
                cv2.destroyAllWindows()
            print(cam.summary.text(), file=log, flush=True)
    return cam.summary


def _loop(cfg: RunConfig, cam: Camera, stop: _Stop) -> None:
    pending: list[Frame] = []
    pace = 1.0 / cfg.fps if cfg.fps else 0.0
    next_t = time.monotonic()
    taken = 0
    events = cam.source.events(cam.done, stop)
    try:
        while True:
            if pace:  # before the frame is read, so its capture time is when it is taken
                next_t += pace
                time.sleep(max(0.0, next_t - time.monotonic()))
            ev = next(events, None)
            if ev is None:
                break
            if isinstance(ev, Outage):
                if pending:
                    cam.judge(pending, stop)
                    pending = []
                cam.outage(ev)
                continue
            pending.append(ev)
            taken += 1
            if len(pending) >= cfg.batch:
                cam.judge(pending, stop)
                pending = []
            if stop() or (cfg.max_frames is not None and taken >= cfg.max_frames):
                break
    finally:
        events.close()  # a live source's grab thread is let go here, not at garbage collection
    if pending:
        cam.judge(pending, stop)
