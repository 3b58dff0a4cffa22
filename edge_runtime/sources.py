"""Frame sources, named the way other vision tools name them: a camera index (`0`), a video file,
a folder of images (sorted by name), a glob pattern, a stream URL (rtsp/http), or a recording folder
made by `twinspect generate` (its frames, with its `roi.json` as the default region of interest).

Every source yields `Frame`s (or `Outage`s for a live camera that dropped out). A frame that cannot
be read or decoded is still yielded, with `error` set, so the run records it instead of losing it.
Offline sources (files, folders) are read sequentially — no CAP_PROP_POS_FRAMES seeking, which is
unreliable for compressed video — and skip already-recorded frames without decoding them on resume.

Live sources (camera, stream, or a video file with `live=True`, which plays it at its frame rate
like a camera and ends at its end: the same code path, testable without hardware) are read by a
grab thread that keeps
only the newest frame, because CAP_PROP_BUFFERSIZE is ignored by most backends and a stale queue
means judging parts that already left the station. A dead camera is detected three ways — read()
fails, read() "succeeds" with an empty or repeated frame (unplugged USB cameras do this), or no
frame arrives within the read timeout (a blocked read() after a stream drops, which cannot be
interrupted: the stuck thread is abandoned and releases its own capture when read() returns) — and
reconnected with bounded exponential backoff.

Opening a stream waits at most the open timeout (`run --open-timeout`, default 5 s), and a read
at most the read timeout (5 s, which is also how long a live source may stay silent before it
counts as an outage): both are handed to OpenCV's FFmpeg backend. A URL is opened with FFmpeg
only — falling back to "any backend" tried FFmpeg again without the timeouts, 30 s more against a
server that accepts and never answers.

Grab threads are joined on close() and are not daemon threads: the interpreter must never tear
down a thread that is inside OpenCV's FFmpeg read(). At exit Python ends daemon threads with a
forced unwind, and a C++ `catch (...)` in the reader swallows it, which aborts the whole process
("FATAL: exception not rethrown", exit 134) — after SIGTERM on a live HTTP stream, losing the exit
code the line's supervisor relies on. read() returns within the FFmpeg read timeout, so the join
is bounded. A caller that never closes its source is covered too: at interpreter exit, before
Python waits for non-daemon threads, every grab thread is told to stop after its current read.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.datasets import IMAGE_EXTS, image_files, read_image_file, recording_roi
from edge_runtime.errors import BadInput, RunFailed
from edge_runtime.preprocess import Roi

OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0
VIDEO_EXTS = {".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".mjpeg"}
URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(slots=True)
class Frame:
    """One captured frame; `image` is None exactly when `error` says why."""

    index: int  # position in the source (offline) or capture count (live)
    name: str  # file name, or the source name for video/camera
    image: np.ndarray | None
    ts: float  # wall-clock seconds at capture (for people)
    t_mono: float  # time.monotonic() at capture (for intervals; never jumps)
    error: str | None = None


@dataclass(slots=True)
class Outage:
    """A live source stopped delivering frames for a while (or for good: recovered=False)."""

    start_ts: float
    end_ts: float
    start_mono: float
    end_mono: float
    frames_missed: int  # estimated from the source's frame rate
    attempts: int  # reconnect attempts made
    reason: str
    recovered: bool = True


Event = Frame | Outage
StopFlag = Callable[[], bool]


def _never() -> bool:
    return False


class Source:
    """Base: `events(done)` yields frames not in `done` (frame indices already recorded)."""

    name: str = ""
    kind: str = ""
    live: bool = False
    default_roi: Roi | None = None
    # Said once on stderr when default_roi is used: where it came from, when not obvious (a
    # roi.json found beside a bare video file).
    roi_note: str | None = None

    def events(
        self, done: frozenset[int] = frozenset(), stop: StopFlag = _never
    ) -> Iterator[Event]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} {self.name}"

    def close(self) -> None:
        """Release the device; safe to call twice."""


# ------------------------------------------------------------------------------- image files
def read_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Decode one image file as stored; (None, reason) on failure, for an ERROR record."""
    try:
        return read_image_file(path), None
    except OSError as e:
        return None, f"cannot read {path.name}: {e.strerror or e}"
    except ValueError as e:
        return None, f"cannot decode {path.name}: {e}"


class ImageFiles(Source):
    """A sorted list of image files: a folder, a glob, a recording's frames, or one image."""

    def __init__(self, paths: list[Path], name: str, kind: str, default_roi: Roi | None = None):
        self.paths = paths
        self.name = name
        self.kind = kind
        self.default_roi = default_roi

    def describe(self) -> str:
        roi = f", roi.json {self.default_roi.to_dict()}" if self.default_roi else ""
        return f"{self.kind} {self.name} ({len(self.paths)} frames{roi})"

    def events(
        self, done: frozenset[int] = frozenset(), stop: StopFlag = _never
    ) -> Iterator[Event]:
        for i, path in enumerate(self.paths):
            if i in done:
                continue
            if stop():
                return
            image, error = read_image(path)
            yield Frame(i, path.name, image, time.time(), time.monotonic(), error)


# ------------------------------------------------------------------------------- capture
_quieted = False


def _quiet_opencv() -> None:
    """OpenCV and FFmpeg print their own warnings on stderr for every failed open or timeout
    (several lines each), drowning the one line twinspect prints about it. Silenced unless
    TWINSPECT_CV_LOGS=1; set OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL to override either."""
    global _quieted
    if _quieted or os.environ.get("TWINSPECT_CV_LOGS") == "1":
        return
    _quieted = True
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read at FFmpeg init
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _open_capture(target: int | str, open_timeout_s: float, read_timeout_s: float):
    """cv2.VideoCapture with open/read timeouts on the FFmpeg backend (files and streams), so a
    dropped stream cannot block read() for minutes; None when it does not open."""
    _quiet_opencv()
    if isinstance(target, int):
        cap = cv2.VideoCapture(target)
    else:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout_s * 1000),
        ]
        cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        # Another backend only for files, or when this build has no FFmpeg: for a URL it would
        # be FFmpeg again without the timeouts (see the module docstring).
        if not cap.isOpened() and (
            not URL_RE.match(target) or not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG)
        ):
            cap.release()
            cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


def _fps(cap) -> float:
    fps = cap.get(cv2.CAP_PROP_FPS)
    return float(fps) if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else 0.0


class VideoFile(Source):
    """A video file read offline: every frame in order, as fast as the inspector takes them."""

    kind = "video"

    def __init__(self, path: Path, open_timeout_s: float = OPEN_TIMEOUT_S) -> None:
        self.path = path
        self.name = path.name
        self._open_timeout_s = open_timeout_s

    def events(
        self, done: frozenset[int] = frozenset(), stop: StopFlag = _never
    ) -> Iterator[Event]:
        cap = _open_capture(str(self.path), self._open_timeout_s, self._open_timeout_s)
        if cap is None:
            raise BadInput(f"{self.path}: OpenCV cannot open this video")
        try:
            i = 0
            while not stop():
                if i in done:  # resume: advance without decoding the frame
                    if not cap.grab():
                        return
                    i += 1
                    continue
                ok, image = cap.read()
                ts, mono = time.time(), time.monotonic()
                if not ok:
                    return
                if image is None or image.size == 0:
                    yield Frame(i, self.name, None, ts, mono, "decoder returned an empty frame")
                else:
                    yield Frame(i, self.name, image, ts, mono)
                i += 1
        finally:
            cap.release()


_grabbers: weakref.WeakSet[_Grabber] = weakref.WeakSet()


def _stop_grabbers_at_exit() -> None:
    """Runs when the interpreter starts to exit, before it joins non-daemon threads: without
    it, a grab thread of a source nobody closed would keep the process alive for good."""
    for g in list(_grabbers):
        g.abandoned = True


# The hook concurrent.futures uses for the same reason; atexit would run after the join.
threading._register_atexit(_stop_grabbers_at_exit)


class _Grabber(threading.Thread):
    """Reads one capture as fast as it delivers and keeps only the newest frame."""

    def __init__(self, cap, cond: threading.Condition, pace_fps: float, stale_repeats: int):
        # Not a daemon: see the module docstring (exit 134 when torn down inside read()).
        super().__init__(daemon=False, name="twinspect-grab")
        self.cap = cap
        self.cond = cond
        self.pace = 1.0 / pace_fps if pace_fps > 0 else 0.0
        self.stale_repeats = stale_repeats
        self.latest: tuple[np.ndarray, float, float] | None = None
        self.seq = 0  # frames grabbed so far
        self.failed: str | None = None
        self.ended = False  # a file played like a camera reached its end
        self.end_at_eof = False
        self.abandoned = False
        _grabbers.add(self)

    def run(self) -> None:
        repeats, last_sig = 0, b""
        next_t = time.monotonic()
        try:
            while not self.abandoned:
                if self.pace:  # a file standing in for a camera: deliver at its frame rate
                    next_t += self.pace
                    time.sleep(max(0.0, next_t - time.monotonic()))
                ok, image = self.cap.read()
                ts, mono = time.time(), time.monotonic()
                if not ok and self.end_at_eof:
                    with self.cond:
                        self.ended = True
                        self.cond.notify_all()
                    return
                if not ok or image is None or image.size == 0:
                    self._fail("the camera stopped delivering frames" if not ok else "empty frame")
                    return
                sig = image[:: max(1, image.shape[0] // 16), :: max(1, image.shape[1] // 16)]
                sig = sig.tobytes()
                repeats = repeats + 1 if sig == last_sig else 0
                last_sig = sig
                if self.stale_repeats and repeats >= self.stale_repeats:
                    self._fail(f"the same frame {repeats + 1} times in a row (stale camera)")
                    return
                with self.cond:
                    if self.abandoned:
                        return
                    self.latest = (image, ts, mono)
                    self.seq += 1
                    self.cond.notify_all()
        finally:
            self.cap.release()

    def _fail(self, reason: str) -> None:
        with self.cond:
            self.failed = reason
            self.cond.notify_all()


@dataclass(frozen=True)
class Reconnect:
    """How hard to try when a live source drops: attempts per outage and their spacing."""

    max_attempts: int = 10
    first_wait_s: float = 0.5
    max_wait_s: float = 10.0

    def wait(self, attempt: int) -> float:
        return min(self.max_wait_s, self.first_wait_s * (2 ** max(0, attempt - 1)))


class LiveCapture(Source):
    """A camera, a stream, or a video file played like a camera (same code path)."""

    live = True

    def __init__(
        self,
        target: int | str,
        name: str,
        kind: str,
        reconnect: Reconnect | None = None,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        stale_repeats: int = 50,
        end_at_eof: bool | None = None,
    ) -> None:
        self.target = target
        self.name = name
        self.kind = kind
        self.reconnect = reconnect or Reconnect()
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.stale_repeats = stale_repeats
        self._paced = isinstance(target, str) and Path(target).is_file()
        # A file ends: by default its end ends the run (reopening it replayed the same frames
        # forever, one outage record per loop). end_at_eof=False keeps the camera behaviour, so
        # a file can stand in for a camera that drops, to exercise reconnects.
        self.end_at_eof = self._paced if end_at_eof is None else end_at_eof
        self._cond = threading.Condition()
        self._grabber: _Grabber | None = None
        self._stopping: list[_Grabber] = []  # abandoned grab threads, joined on close()
        self.fps = 0.0
        self.grabbed = 0  # frames the camera delivered, including those replaced by newer ones

    def _start(self) -> bool:
        cap = _open_capture(self.target, self.open_timeout_s, self.read_timeout_s)
        if cap is None:
            return False
        if not self._paced:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # best effort; the grab thread is the real fix
        self.fps = _fps(cap) or self.fps
        pace = (self.fps or 30.0) if self._paced else 0.0
        self._grabber = _Grabber(cap, self._cond, pace, self.stale_repeats)
        self._grabber.end_at_eof = self.end_at_eof
        self._grabber.start()
        return True

    def _abandon(self) -> None:
        g = self._grabber
        if g is not None:
            with self._cond:
                self.grabbed += g.seq
                g.abandoned = True  # a thread stuck in read() releases its capture on return
            self._grabber = None
            self._stopping.append(g)

    def close(self) -> None:
        """Stop grabbing and wait for the grab threads to leave OpenCV (bounded by the read
        timeout), so the process can exit cleanly; safe to call twice."""
        self._abandon()
        deadline = time.monotonic() + self.read_timeout_s + 1.0
        for g in self._stopping:
            g.join(timeout=max(0.0, deadline - time.monotonic()))
        self._stopping = [g for g in self._stopping if g.is_alive()]

    def events(
        self, done: frozenset[int] = frozenset(), stop: StopFlag = _never
    ) -> Iterator[Event]:
        t0 = time.monotonic()
        if not self._start():
            waited = time.monotonic() - t0
            if isinstance(self.target, str) and waited >= 0.9 * self.open_timeout_s:
                raise BadInput(
                    f"{self.describe()}: no answer within {self.open_timeout_s:g} s "
                    "(--open-timeout); check the URL and that the camera is up, or raise "
                    "--open-timeout"
                )
            raise BadInput(f"{self.describe()}: cannot open (check the index, URL or cable)")
        index = max(done) + 1 if done else 0  # resume: live frames are new, keep indices unique
        last_seq, last_mono = 0, time.monotonic()
        try:
            while not stop():
                g = self._grabber
                with self._cond:
                    if g.seq == last_seq and not g.failed and not g.ended:
                        self._cond.wait(timeout=0.1)
                    seq, latest, failed, ended = g.seq, g.latest, g.failed, g.ended
                if seq != last_seq and latest is not None:
                    last_seq = seq
                    image, ts, mono = latest
                    last_mono = mono
                    yield Frame(index, self.name, image, ts, mono)
                    index += 1
                    continue
                if ended:  # the newest frame is judged (above) before the end is taken
                    return
                silent = time.monotonic() - last_mono
                if failed is None and silent < self.read_timeout_s:
                    continue
                reason = failed or f"no frame for {silent:.1f} s (read timed out)"
                outage = yield from self._reconnect(reason, last_mono, stop)
                if outage is None:  # stopped by a signal while reconnecting
                    return
                last_seq, last_mono = 0, time.monotonic()
        finally:
            self._abandon()

    def _reconnect(self, reason: str, since_mono: float, stop: StopFlag):
        """Reopen with bounded backoff; yield the outage record; raise RunFailed when exhausted."""
        self._abandon()
        start_mono = since_mono
        start_ts = time.time() - (time.monotonic() - since_mono)
        attempts = 0
        while attempts < self.reconnect.max_attempts:
            attempts += 1
            deadline = time.monotonic() + self.reconnect.wait(attempts)
            while time.monotonic() < deadline:
                if stop():
                    return None
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            if self._start() and self._first_frame(stop):
                end_mono = time.monotonic()
                yield self._outage(start_ts, start_mono, end_mono, attempts, reason, True)
                return True
            self._abandon()
        end_mono = time.monotonic()
        yield self._outage(start_ts, start_mono, end_mono, attempts, reason, False)
        raise RunFailed(
            f"{self.describe()}: {reason}; gave up after {attempts} reconnect attempts "
            f"({end_mono - start_mono:.1f} s without frames; raise --max-reconnects to wait longer)"
        )

    def _first_frame(self, stop: StopFlag) -> bool:
        g = self._grabber
        deadline = time.monotonic() + self.read_timeout_s
        with self._cond:
            while g.seq == 0 and not g.failed and not stop():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.1))
            return g.seq > 0

    def _outage(self, start_ts, start_mono, end_mono, attempts, reason, recovered) -> Outage:
        seconds = max(0.0, end_mono - start_mono)
        return Outage(
            start_ts=start_ts,
            end_ts=start_ts + seconds,
            start_mono=start_mono,
            end_mono=end_mono,
            frames_missed=round(seconds * (self.fps or 30.0)),
            attempts=attempts,
            reason=reason,
            recovered=recovered,
        )


# ------------------------------------------------------------------------------- opening
def _recording(
    folder: Path, reconnect: Reconnect | None, live: bool, open_timeout_s: float = OPEN_TIMEOUT_S
) -> Source:
    roi = recording_roi(folder)
    frames = folder / "frames"
    if frames.is_dir() and not live:
        return ImageFiles(image_files(frames), str(folder), "recording", default_roi=roi)
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not videos:
        raise BadInput(f"{folder}: a recording needs frames/ or a video beside roi.json")
    src = (
        LiveCapture(
            str(videos[0]), str(videos[0]), "recording video (live)", reconnect, open_timeout_s
        )
        if live
        else VideoFile(videos[0], open_timeout_s)
    )
    src.default_roi = roi
    return src


def _roi_beside(src: Source, video: Path) -> Source:
    """A recording's line.avi given alone still gets its recording's ROI: without it whole
    frames are shrunk to the model input and every part is judged NG."""
    if (video.parent / "roi.json").is_file():
        src.default_roi = recording_roi(video.parent)
        src.roi_note = (
            f"using the ROI {src.default_roi.to_dict()} from {video.parent / 'roi.json'} "
            f"beside {video.name} (--roi to override)"
        )
    return src


def open_source(
    text: str,
    live: bool = False,
    reconnect: Reconnect | None = None,
    open_timeout_s: float = OPEN_TIMEOUT_S,
) -> Source:
    """Resolve a --source argument. Refuses (BadInput, exit 2) what is not a usable source.

    `live=True` plays a video file like a camera: grab thread, newest frame only, reconnect at
    its end — the camera's code path, exercised without a camera.
    """
    path = Path(text)
    if path.exists():
        if path.is_dir():
            if (path / "roi.json").is_file():
                return _recording(path, reconnect, live, open_timeout_s)
            if (path / "recording" / "roi.json").is_file():  # the folder `generate` wrote
                return _recording(path / "recording", reconnect, live, open_timeout_s)
            images = image_files(path)
            if not images:
                raise BadInput(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTS))})")
            return ImageFiles(images, str(path), "folder")
        if path.suffix.lower() in IMAGE_EXTS:
            return ImageFiles([path], str(path), "image")
        if live:
            src = LiveCapture(str(path), str(path), "video (live)", reconnect, open_timeout_s)
            return _roi_beside(src, path)
        return _roi_beside(VideoFile(path, open_timeout_s), path)
    if text.isdigit():
        return LiveCapture(int(text), f"camera {text}", "camera", reconnect, open_timeout_s)
    if URL_RE.match(text):
        return LiveCapture(text, text, "stream", reconnect, open_timeout_s)
    if any(c in text for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        images = [p for p in matches if p.is_file()]
        if not images:
            raise BadInput(f"--source {text!r}: the pattern matches no files")
        return ImageFiles(images, text, "glob")
    raise BadInput(
        f"--source {text!r}: no such file or folder (a source is a camera index, a video file, "
        "a folder of images, a glob pattern, an rtsp/http URL, or a recording folder)"
    )
