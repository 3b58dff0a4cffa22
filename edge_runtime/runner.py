"""The run loop of `twinspect run`: a whole shift without losing anything.

Order matters: the model is loaded (and refused, exit 2) before any source is opened; the output
is opened (and a resumed file repaired) before the first frame. Every frame gives exactly one
record, written and flushed before the next frame is taken. SIGINT/SIGTERM finish the frame in
hand, flush, print the summary, and exit 0. A live source that cannot be reconnected within
--max-reconnects attempts ends the run with exit 1 after its outage is recorded.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from array import array
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.inspector import BLANK_STD, Inspector, Judgement
from edge_runtime.model import SessionOptions, load_model_dir
from edge_runtime.overlay import draw, to_bgr
from edge_runtime.preprocess import Roi, crop
from edge_runtime.records import (
    FsyncPolicy,
    RecordWriter,
    ResultsLock,
    ResultsWriteError,
    RunIdentity,
    check_resume,
    frame_record,
    outage_record,
    recorded_frames,
    write_state,
)
from edge_runtime.sources import (
    OPEN_TIMEOUT_S,
    Frame,
    Outage,
    Reconnect,
    Source,
    open_source,
)

WINDOW = "twinspect"


@dataclass
class RunConfig:
    model_dir: Path
    source: str
    out: Path | None = None  # None: stdout
    fmt: str = "jsonl"  # or "csv"
    roi: Roi | None = None  # None: the sidecar's, else the recording's, else the whole frame
    threshold: float | None = None  # None: the sidecar's
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


@dataclass
class Summary:
    """Counts, score distribution and per-stage latency of one run (this process's frames)."""

    source: str = ""
    threshold: float = 0.0
    threshold_from: str = "sidecar"
    frames: int = 0
    ok: int = 0
    ng: int = 0
    error: int = 0
    outages: int = 0
    frames_missed: int = 0
    resumed_skipped: int = 0
    save_failures: int = 0
    stopped_by: str = ""
    resume_note: bool = False
    seconds: float = 0.0
    scores: array = field(default_factory=lambda: array("d"))
    lat: dict = field(
        default_factory=lambda: {k: array("f") for k in ("preprocess", "embed", "score", "total")}
    )

    def add(self, j: Judgement) -> None:
        self.frames += 1
        if j.verdict == "ERROR":
            self.error += 1
            return
        if j.verdict == "NG":
            self.ng += 1
        else:
            self.ok += 1
        self.scores.append(j.score)
        for k, ns in (
            ("preprocess", j.pre_ns),
            ("embed", j.embed_ns),
            ("score", j.score_ns),
            ("total", j.total_ns),
        ):
            self.lat[k].append(ns / 1000.0)

    @property
    def yield_(self) -> float:
        judged = self.ok + self.ng
        return self.ok / judged if judged else float("nan")

    def to_dict(self) -> dict:
        s = np.asarray(self.scores)
        q = (0, 5, 50, 95, 100)
        names = ("min", "p5", "p50", "p95", "max")
        dist = dict(zip(names, np.percentile(s, q).tolist(), strict=True)) if len(s) else {}
        return {
            "source": self.source,
            "frames": self.frames,
            "ok": self.ok,
            "ng": self.ng,
            "error": self.error,
            "yield": self.yield_,
            "threshold": self.threshold,
            "threshold_from": self.threshold_from,
            "outages": self.outages,
            "frames_missed": self.frames_missed,
            "resumed_skipped": self.resumed_skipped,
            "save_failures": self.save_failures,
            "seconds": round(self.seconds, 3),
            "score": dist,
            "latency_us": {
                k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
                for k, v in self.lat.items()
                if len(v)
            },
        }

    def text(self) -> str:
        d = self.to_dict()
        y = "n/a" if d["ok"] + d["ng"] == 0 else f"{100 * d['yield']:.2f}%"
        lines = [
            f"twinspect run: {d['source']}",
            f"  frames {d['frames']}: OK {d['ok']}, NG {d['ng']}, ERROR {d['error']}; "
            f"yield {y} (OK of judged) in {d['seconds']:.1f} s"
            + (f"; stopped by {self.stopped_by}" if self.stopped_by else ""),
            f"  threshold {d['threshold']:.6g} ({d['threshold_from']})"
            + (
                f"; resumed, {d['resumed_skipped']} frames already recorded"
                if self.resume_note
                else ""
            )
            + (
                f"; outages {d['outages']} ({d['frames_missed']} frames missed)"
                if d["outages"]
                else ""
            )
            + (f"; NG saves failed {d['save_failures']}" if d["save_failures"] else ""),
        ]
        if d["score"]:
            lines.append("  score  " + "  ".join(f"{k} {v:.4g}" for k, v in d["score"].items()))
            lines.append(f"  score histogram (threshold at |): {self.histogram()}")
        if d["latency_us"]:
            lines.append("  latency µs        p50      p99")
            for k, v in d["latency_us"].items():
                lines.append(f"    {k:<12} {v['p50']:>8.1f} {v['p99']:>8.1f}")
        return "\n".join(lines)

    def histogram(self, bins: int = 20) -> str:
        """A one-line sparkline of scores from 0 to 2·threshold (the normalized scale)."""
        s = np.asarray(self.scores)
        if not len(s) or self.threshold <= 0:
            return ""
        counts, _ = np.histogram(np.clip(s / (2 * self.threshold), 0, 1), bins=bins, range=(0, 1))
        marks = " ▁▂▃▄▅▆▇█"
        top = counts.max() or 1
        cells = [marks[round(8 * c / top)] if c else " " for c in counts]
        cells.insert(bins // 2, "|")
        return "[" + "".join(cells) + "]"


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


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"PNG encoding failed for {path.name}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def save_ng(folder: Path, frame: Frame, roi: Roi | None, j: Judgement, threshold: float) -> dict:
    """Write the NG crop and the annotated full frame; a failure is returned, never raised."""
    stem = f"{frame.index:06d}_{Path(frame.name).stem}"[:120]
    crop_path, full_path = folder / f"{stem}_crop.png", folder / f"{stem}_frame.png"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_png(crop_path, to_bgr(crop(frame.image, roi)))
        _write_png(full_path, draw(frame.image, roi, j.verdict, j.score, threshold))
    except (OSError, cv2.error) as e:
        for p in (crop_path, full_path):  # no half-written review images
            with suppress(OSError):
                p.unlink(missing_ok=True)
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip()
        return {"save_error": f"{folder}: {msg.splitlines()[-1] if msg else type(e).__name__}"}
    return {"saved_crop": str(crop_path), "saved_frame": str(full_path)}


def _identity(cfg: RunConfig, model, inspector: Inspector) -> RunIdentity:
    src = Path(cfg.source)
    return RunIdentity(
        source=cfg.source,
        source_resolved=str(src.resolve()) if src.exists() else cfg.source,
        model_dir=str(cfg.model_dir),
        model_sha256=model.sidecar.model_sha256,
        threshold=inspector.threshold,
        threshold_from=inspector.threshold_from,
        roi=inspector.roi.to_dict() if inspector.roi else None,
        format=cfg.fmt,
    )


def _prepare_output(cfg: RunConfig, ident: RunIdentity) -> tuple[frozenset[int], list[str]]:
    """Frames already recorded (resume) and the differences a forced resume accepted."""
    if cfg.out is None:
        if cfg.resume:
            raise BadInput("--resume needs --out FILE (the results of the run to continue)")
        return frozenset(), []
    if cfg.resume:
        forced = check_resume(cfg.out, ident, cfg.force)  # before anything is cut
        return recorded_frames(cfg.out, cfg.fmt)[0], forced
    if cfg.out.exists() and cfg.out.stat().st_size > 0 and not cfg.overwrite:
        raise BadInput(
            f"--out {cfg.out} already holds results; --resume to continue it, "
            "--overwrite to replace it"
        )
    return frozenset(), []


def resolve_roi(cfg_roi: Roi | None, sidecar_roi: Roi | None, source: Source) -> Roi | None:
    """--roi beats the recording's roi.json, which beats the sidecar's ROI."""
    return cfg_roi or source.default_roi or sidecar_roi


WHOLE_FRAME_FACTOR = 4  # frames this many times the model input (either side) need a ROI


def whole_frame_warning(shape: tuple[int, ...], spec) -> str | None:
    """A warning when whole frames, much larger than the model input, are about to be shrunk
    to it: the part becomes a few pixels wide and every frame is judged NG, which looks like a
    broken model rather than a missing --roi."""
    h, w = shape[:2]
    if h < WHOLE_FRAME_FACTOR * spec.height and w < WHOLE_FRAME_FACTOR * spec.width:
        return None
    return (
        f"twinspect run: warning: frames are {w}×{h} and no ROI is set (no --roi, no roi.json, "
        f"none in the sidecar), so each whole frame is shrunk to the model's "
        f"{spec.width}×{spec.height}; give --roi x,y,w,h, or the recording folder (with its "
        "roi.json) as --source"
    )


def run(cfg: RunConfig, log: IO[str] | None = None) -> Summary:
    """Inspect every frame of cfg.source; returns the summary (also printed to `log`).

    Raises BadModel/BadInput (exit 2) before opening the source, RunFailed (exit 1) when a live
    source stays down beyond --max-reconnects (after recording the outage and the summary).
    """
    if cfg.batch < 1:
        raise BadInput(f"--batch must be ≥ 1, got {cfg.batch}")
    if cfg.fmt not in ("jsonl", "csv"):
        raise BadInput(f"unknown output format {cfg.fmt!r}")
    model = load_model_dir(cfg.model_dir, SessionOptions(cfg.threads, cfg.spin))
    if cfg.show:
        _check_gui()
    source = open_source(
        cfg.source,
        live=cfg.live,
        reconnect=Reconnect(
            cfg.max_reconnects, cfg.reconnect_wait_s, max(cfg.reconnect_wait_s, 10.0)
        ),
        open_timeout_s=cfg.open_timeout_s,
    )
    if source.live and cfg.batch > 1:
        raise BadInput("--batch is for offline sources; a live camera is judged frame by frame")
    if source.live and cfg.fps:
        raise BadInput("--fps paces offline sources; a live source runs at its own rate")
    roi = resolve_roi(cfg.roi, model.sidecar.roi, source)
    if cfg.roi is None and source.roi_note and roi == source.default_roi:
        print(f"twinspect run: {source.roi_note}", file=sys.stderr, flush=True)
    inspector = Inspector(model, roi, cfg.threshold, cfg.batch, cfg.blank_std)
    # Locked before the file is read (resume), cut or truncated: one writer per results file.
    lock = ResultsLock(cfg.out) if cfg.out is not None else None
    writer: RecordWriter | None = None
    try:
        ident = _identity(cfg, model, inspector)
        done, forced = _prepare_output(cfg, ident)
        writer = RecordWriter(cfg.out, cfg.fmt, append=cfg.resume, fsync=FsyncPolicy(cfg.fsync))
        if cfg.out is not None:
            write_state(cfg.out, ident, cfg.resume, forced)
    except BaseException:
        if writer is not None:
            writer.close()
        if lock is not None:
            lock.release()
        raise
    log = log or (sys.stderr if cfg.out is None else sys.stdout)
    summary = Summary(
        source=source.describe() + (f", ROI {roi.to_dict()}" if roi else ", whole frame"),
        threshold=inspector.threshold,
        threshold_from=inspector.threshold_from,
        resumed_skipped=len(done),
        resume_note=cfg.resume,
    )
    stop = _Stop()
    t0 = time.monotonic()
    try:
        with _signals(stop):
            _loop(cfg, source, inspector, writer, summary, stop, done)
    except ResultsWriteError:
        stop.reason = stop.reason or "a failed write to the results"
        raise
    finally:
        summary.stopped_by = stop.reason
        summary.seconds = time.monotonic() - t0
        source.close()
        try:
            writer.close()  # may fail to fsync the last records: still unlock and summarize
        finally:
            if lock is not None:
                lock.release()
            if cfg.show:
                cv2.destroyAllWindows()
            print(summary.text(), file=log, flush=True)
    return summary


def _loop(cfg, source, inspector, writer, summary, stop, done) -> None:
    pending: list[Frame] = []
    pace = 1.0 / cfg.fps if cfg.fps else 0.0
    next_t = time.monotonic()

    check_whole_frame = inspector.roi is None

    def judge(frames: list[Frame]) -> None:
        nonlocal check_whole_frame
        if check_whole_frame:  # once, on the first decoded frame
            first = next((f.image for f in frames if f.image is not None), None)
            if first is not None:
                check_whole_frame = False
                warning = whole_frame_warning(first.shape, inspector.spec)
                if warning:
                    print(warning, file=sys.stderr, flush=True)
        if len(frames) == 1:
            js = [inspector.inspect(frames[0].image)]
        else:
            js = inspector.inspect_many([f.image for f in frames])
        for f, j in zip(frames, js, strict=True):
            if f.error:
                j.reason = f.error
            saved = None
            if j.verdict == "NG" and cfg.save_ng is not None:
                saved = save_ng(cfg.save_ng, f, inspector.roi, j, inspector.threshold)
                summary.save_failures += "save_error" in saved
            writer.write(frame_record(f, j, inspector.threshold, inspector.threshold_from, saved))
            summary.add(j)
            if cfg.show and f.image is not None:
                cv2.imshow(
                    WINDOW,
                    draw(f.image, inspector.roi, j.verdict, j.score, inspector.threshold, j.reason),
                )
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    stop.reason = "window closed (q/Esc)"

    taken = 0
    for ev in source.events(done, stop):
        if isinstance(ev, Outage):
            if pending:
                judge(pending)
                pending = []
            writer.write(outage_record(source.name, ev))
            summary.outages += 1
            summary.frames_missed += ev.frames_missed
            continue
        if pace:
            next_t += pace
            time.sleep(max(0.0, next_t - time.monotonic()))
        pending.append(ev)
        taken += 1
        if len(pending) >= cfg.batch:
            judge(pending)
            pending = []
        if stop() or (cfg.max_frames is not None and taken >= cfg.max_frames):
            break
    if pending:
        judge(pending)
