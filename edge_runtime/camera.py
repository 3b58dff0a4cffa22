"""One camera of a run: its source, its inspector, its results file, its counters.

A single `twinspect run` has one; a station (`--config`) has several, sharing one model session
per model directory and one inference loop. Everything that happens to one camera's frames is
here, once, so both loops record a part the same way: judge → part id and deadline → NG review
images → one record written whole → summary, metrics, sinks. A rejected part's heatmap is drawn
behind the loop (edge_runtime.review.HeatWorker) and written as a `heat` record when it is done.

Opening is two steps so a station can refuse a bad camera before touching anybody's results:
`open_camera` resolves the source, the ROI and the inspector, takes the results file's lock and
checks a resume (nothing written yet); `Camera.open_output` then truncates or appends and writes
`OUT.run.json`. A station does the first step for every camera before the second for any.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from edge_runtime.errors import BadInput
from edge_runtime.inspector import Inspector
from edge_runtime.overlay import draw
from edge_runtime.parts import PartPolicy, stamp
from edge_runtime.preprocess import Roi
from edge_runtime.records import (
    FsyncPolicy,
    RecordWriter,
    ResultsLock,
    RunIdentity,
    check_resume,
    frame_record,
    outage_record,
    recorded_frames,
    write_state,
)
from edge_runtime.review import HeatWorker, heat_base, review_paths, save_ng
from edge_runtime.sinks_hook import sink_label
from edge_runtime.sources import Frame, ImageFiles, Outage, Reconnect, Source, open_source
from edge_runtime.summary import Summary

if TYPE_CHECKING:
    from edge_runtime.model import EmbeddingModel
    from edge_runtime.runner import RunConfig

WINDOW = "twinspect"
WHOLE_FRAME_FACTOR = 4  # frames this many times the model input (either side) need a ROI


def identity(cfg: RunConfig, model: EmbeddingModel, inspector: Inspector) -> RunIdentity:
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


def prepare_output(cfg: RunConfig, ident: RunIdentity) -> tuple[frozenset[int], list[str]]:
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


@dataclass
class CameraStatus:
    """What /healthz and the `up` gauge read. Written by the inference loop only; plain
    attribute stores, so the HTTP thread reading them needs no lock."""

    name: str
    stale_after_s: float
    started_mono: float = field(default_factory=time.monotonic)
    last_frame_mono: float | None = None
    state: str = "running"  # running | done (an offline source ended) | failed
    error: str | None = None
    frames: int = 0

    def age(self, now: float) -> float:
        """Seconds since the last recorded frame (since the start, before the first)."""
        return now - (self.last_frame_mono or self.started_mono)

    def stale(self, now: float) -> bool:
        """Failed, or running without a frame for longer than stale_after_s. A camera whose
        offline source simply ended is done, not stale."""
        return self.state == "failed" or (
            self.state == "running" and self.age(now) > self.stale_after_s
        )

    def to_dict(self, now: float) -> dict:
        return {
            "state": self.state,
            "ok": not self.stale(now),
            "frames": self.frames,
            "last_frame_age_s": round(self.age(now), 3),
            "stale_after_s": self.stale_after_s,
            **({"error": self.error} if self.error else {}),
        }


class Camera:
    """One source judged by one inspector into one results file (see the module doc)."""

    def __init__(
        self,
        cfg: RunConfig,
        source: Source,
        inspector: Inspector,
        part: PartPolicy,
        label: str = "",
    ) -> None:
        self.cfg = cfg
        self.name = part.camera
        self.label = label  # "cam1: " in a station, "" for a single run
        self.source = source
        self.inspector = inspector
        self.part = part
        self.window = (WINDOW + (f": {self.name}" if label else "")) if cfg.show else None
        self.lock: ResultsLock | None = None
        self.writer: RecordWriter | None = None
        self.ident: RunIdentity | None = None
        self.done: frozenset[int] = frozenset()
        self.forced: list[str] = []
        self.summary = Summary(threshold=inspector.threshold)
        self.status = CameraStatus(self.name, cfg.stale_after_s)
        self.metrics = None  # a metrics.CameraMetrics while /metrics is served
        self.sinks: list = []  # opened by sinks_hook.open_sinks
        self.sink_errors = 0
        # The station page (edge_runtime/page): a threshold holder read once per batch (hot
        # swap from the next frame), and watchers called with (frame, record, roi) per record.
        self.threshold_holder = None
        self.watchers: list = []
        self._check_whole_frame = inspector.roi is None
        # rejected parts' heatmaps, drawn off the loop; started with the output
        self.heat: HeatWorker | None = None
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    def open_output(self) -> None:
        """Step two: open (truncate or append) the results and write OUT.run.json."""
        cfg = self.cfg
        self.writer = RecordWriter(
            cfg.out, cfg.fmt, append=cfg.resume, fsync=FsyncPolicy(cfg.fsync)
        )
        if cfg.out is not None:
            write_state(cfg.out, self.ident, cfg.resume, self.forced)
        if cfg.save_ng is not None:
            self.heat = HeatWorker(self.inspector, self._write)

    # ------------------------------------------------------------------ frames
    def judge(self, frames: list[Frame], stop=None) -> None:
        """Judge frames (one batch), then record each: the loop's only per-frame work."""
        insp, cfg = self.inspector, self.cfg
        if self.threshold_holder is not None:  # the page may have signed off a new one
            insp.threshold, insp.threshold_from = self.threshold_holder.get()
        if self._check_whole_frame:  # once, on the first decoded frame
            first = next((f.image for f in frames if f.image is not None), None)
            if first is not None:
                self._check_whole_frame = False
                warning = whole_frame_warning(first.shape, insp.spec)
                if warning:
                    print(warning.replace(": ", f": {self.label}", 1), file=sys.stderr, flush=True)
        if len(frames) == 1:
            js = [insp.inspect(frames[0].image)]
        else:
            js = insp.inspect_many([f.image for f in frames])
        decided_ts, decided_mono = time.time(), time.monotonic()
        prefix = f"{self.name}_" if self.label else ""
        for f, j in zip(frames, js, strict=True):
            if f.error:
                j.reason = f.error
            saved = None
            if j.verdict in ("NG", "NOVEL") and cfg.save_ng is not None:
                paths = review_paths(cfg.save_ng, f, prefix)  # crop, frame and heatmap
                saved = save_ng(paths, f, insp.roi, j, insp.threshold)
                self.summary.save_failures += "save_error" in saved
            rec = frame_record(f, j, insp.threshold, insp.threshold_from, saved)
            late = stamp(rec, self.part, f.index, f.name, decided_ts, decided_mono)
            if saved and "save_error" not in saved and self.heat is not None:
                why_not = self.heat.submit(paths["heat"], f, heat_base(f, rec))
                if why_not:
                    rec["heat_error"] = why_not
            self._write(rec)
            self.summary.add(j, rec["verdict"], late)
            self.status.frames += 1
            self.status.last_frame_mono = decided_mono
            if self.metrics is not None:
                self.metrics.frame(rec, j)
            self._submit(rec)
            for watch in self.watchers:
                watch(f, rec, insp.roi)
            if self.window and f.image is not None:
                cv2.imshow(
                    self.window,
                    draw(f.image, insp.roi, rec["verdict"], j.score, insp.threshold, rec["reason"]),
                )
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27) and stop is not None:
                    stop.reason = "window closed (q/Esc)"

    def _write(self, rec: dict) -> None:
        """Write one record whole: the loop's and the heat worker's writes take turns."""
        with self._write_lock:
            self.writer.write(rec)

    def outage(self, ev: Outage) -> None:
        rec = outage_record(self.source.name, ev)
        rec["camera"] = self.name
        self._write(rec)
        self.summary.outages += 1
        self.summary.frames_missed += ev.frames_missed
        if self.metrics is not None:
            self.metrics.outage()
        self._submit(rec)

    def _submit(self, rec: dict) -> None:
        """Hand a record to each sink. A sink must never stop the line: the record is already
        in the results file, so a failing sink is counted and said once, not raised."""
        for sink in self.sinks:
            try:
                sink.submit(rec)
            except Exception as e:  # any failure of another package's sink, by design
                self.sink_errors += 1
                if self.sink_errors == 1:
                    msg = f"{type(e).__name__}: {e}".strip()
                    print(
                        f"twinspect run: {self.label}warning: sink {sink_label(sink)} refused a "
                        "record "
                        f"({msg}); records still go to the results file",
                        file=sys.stderr,
                        flush=True,
                    )

    # ------------------------------------------------------------------ closing
    def close(self, sink_timeout_s: float = 2.0) -> None:
        """Release the source, flush the sinks, close the results and drop the lock. The writer's
        close may fail to fsync the last records (ResultsWriteError): the lock is dropped anyway."""
        try:
            self.source.close()
            if self.heat is not None:
                self.heat, heat = None, self.heat
                heat.close()  # heatmaps still queued are drawn and recorded first
            for sink in self.sinks:
                with suppress(Exception):  # a sink's close must not cost the results their fsync
                    sink.close(sink_timeout_s)
            if self.writer is not None:
                self.writer.close()
        finally:
            if self.lock is not None:
                self.lock.release()


def open_camera(cfg: RunConfig, model: EmbeddingModel, label: str = "") -> Camera:
    """Step one (see the module doc): resolve the source, ROI and inspector, lock the results
    file and check a resume. Raises BadInput (exit 2) with nothing written."""
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
    part = PartPolicy(cfg.camera, cfg.part_id_from, cfg.deadline_ms, cfg.fail_safe)
    if part.part_id_from == "filename" and not isinstance(source, ImageFiles):
        raise BadInput(
            f"part_id_from filename needs image files (a folder, glob or recording's "
            f"frames); {source.describe()} has no file names"
        )
    roi = resolve_roi(cfg.roi, model.sidecar.roi, source)
    if cfg.roi is None and source.roi_note and roi == source.default_roi:
        print(f"twinspect run: {label}{source.roi_note}", file=sys.stderr, flush=True)
    inspector = Inspector(model, roi, cfg.threshold, cfg.batch, cfg.blank_std)
    if cfg.threshold is not None and cfg.threshold_from:
        inspector.threshold_from = cfg.threshold_from
    cam = Camera(cfg, source, inspector, part, label)
    # Locked before the file is read (resume), cut or truncated: one writer per results file.
    cam.lock = ResultsLock(cfg.out) if cfg.out is not None else None
    try:
        cam.ident = identity(cfg, model, inspector)
        cam.done, cam.forced = prepare_output(cfg, cam.ident)
    except BaseException:
        if cam.lock is not None:
            cam.lock.release()
        raise
    s = cam.summary
    s.source = label + source.describe() + (f", ROI {roi.to_dict()}" if roi else ", whole frame")
    s.threshold_from = inspector.threshold_from
    s.resumed_skipped = len(cam.done)
    s.resume_note = cfg.resume
    s.deadline_ms = cfg.deadline_ms
    return cam
