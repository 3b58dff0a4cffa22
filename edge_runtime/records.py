"""Result records: one per frame (and one per camera outage), written and flushed as decided.

JSONL by default (one object per line), CSV on request. Each record is written with a single
write() and flushed, so after a kill -9 every earlier record is on disk and at most the line being
written is torn. `--resume` reads what an earlier run recorded, cuts a torn last line, and skips
those frames.

What made a results file is kept beside it, in `<file>.run.json`: the source, the model's
SHA-256, the threshold, the ROI and the format. `--resume` compares them with the run about to
continue it and refuses a difference (unless --force): frames are skipped by index, so a resume
with another source would skip frames it never judged, and another model or threshold would mix
two sets of verdicts in one file without a trace.

One writer per results file: a run holds an exclusive flock on the file for its whole life, taken
before anything is read, cut or truncated, so a second run on the same --out (by mistake, or a
supervisor restarting a run that is still alive) is refused instead of interleaving or truncating
records under the first.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.errors import BadInput
from edge_runtime.files import atomic_write_bytes
from edge_runtime.inspector import Judgement
from edge_runtime.sources import Frame, Outage

CSV_FIELDS = [
    "event",
    "frame",
    "source",
    "ts",
    "t_mono",
    "verdict",
    "score",
    "score_norm",
    "reason",
    "threshold",
    "threshold_from",
    "preprocess_us",
    "embed_us",
    "score_us",
    "total_us",
    "batch",
    "saved_crop",
    "saved_frame",
    "save_error",
    "end_ts",
    "end_mono",
    "seconds",
    "frames_missed",
    "reconnect_attempts",
    "recovered",
    # Part identity and deadline (parts.py); appended so the columns above keep their places.
    "camera",
    "part_id",
    "captured_at",
    "decided_at",
    "t_decided_mono",
    "decision_ms",
    "late",
    "verdict_original",
]


def _us(ns: int) -> float:
    return round(ns / 1000.0, 1)


def frame_record(
    frame: Frame, j: Judgement, threshold: float, threshold_from: str, saved: dict | None = None
) -> dict:
    """The JSON object of one judged frame."""
    rec = {
        "event": "frame",
        "frame": frame.index,
        "source": frame.name,
        "ts": round(frame.ts, 6),
        "t_mono": round(frame.t_mono, 6),
        "verdict": j.verdict,
        "score": j.score,
        "score_norm": j.score_norm,
        "reason": j.reason,
        "threshold": threshold,
        "threshold_from": threshold_from,
        "latency_us": {
            "preprocess": _us(j.pre_ns),
            "embed": _us(j.embed_ns),
            "score": _us(j.score_ns),
            "total": _us(j.total_ns),
        },
        "batch": j.batch,
    }
    if j.nearest is not None:  # NG/NOVEL: the known defect type it is nearest to
        rec["nearest_type"] = j.nearest
        rec["type_distance"] = round(j.type_distance, 4)
    if saved:
        rec.update(saved)
    return rec


def outage_record(source: str, o: Outage) -> dict:
    return {
        "event": "outage",
        "source": source,
        "ts": round(o.start_ts, 6),
        "t_mono": round(o.start_mono, 6),
        "end_ts": round(o.end_ts, 6),
        "end_mono": round(o.end_mono, 6),
        "seconds": round(o.end_mono - o.start_mono, 3),
        "frames_missed": o.frames_missed,
        "reconnect_attempts": o.attempts,
        "recovered": o.recovered,
        "reason": o.reason,
    }


def _csv_row(rec: dict) -> dict:
    row = {k: v for k, v in rec.items() if k in CSV_FIELDS}
    for stage, us in rec.get("latency_us", {}).items():
        row[f"{stage}_us"] = us
    return row


FSYNC_MODES = ("every", "batch", "off")


@dataclass(frozen=True)
class FsyncPolicy:
    """When records are forced from the page cache to the disk with fsync().

    A record is in the file as soon as write() returns, so a killed or crashed process never
    loses one; fsync only matters when the machine loses power or the kernel dies. `every`
    loses nothing then but costs a disk flush per part (milliseconds on an SD card or a busy
    disk, which the line feels); `batch` (default) flushes every `records` records or once
    `seconds` have passed since the last flush, whichever comes first, so a power cut loses at
    most that much; `off` leaves it to the OS (typically up to 30 s of records on a power cut).

    Where the flush runs (RecordWriter): `batch` fsyncs on a thread of its own (_Flusher), so
    a slow flush delays the flush, not the next part. `every` fsyncs in write(), on the
    inspection thread, because that is what it promises: a record is on the disk before the
    sinks hear of it and before the next part is judged — the cost its user chose.
    """

    mode: str = "batch"
    records: int = 100
    seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in FSYNC_MODES:
            raise BadInput(f"--fsync {self.mode!r}: expected one of {', '.join(FSYNC_MODES)}")

    def due(self, pending: int, seconds_since: float) -> bool:
        """Whether to fsync now, with `pending` records written since the last fsync."""
        if self.mode == "off" or pending == 0:
            return False
        return self.mode == "every" or pending >= self.records or seconds_since >= self.seconds


class ResultsWriteError(BadInput):
    """Writing a record failed (disk full, I/O error, file size limit). Exit 2: the file holds
    every record before it, whole; the run stops, as nothing more could be kept."""


class _Flusher:
    """`--fsync batch` off the inspection thread: a thread that calls `sync` when the policy
    says a flush is due (`records` written, or `seconds` since the last flush with one
    waiting). write() only counts (`wrote`), so a part never waits for a flush.

    A failed flush ends the thread; its error is raised by the writer's next write() or by
    close() (`check`, `stop`), so the run stops with exit 2 as when the flush was in write().
    """

    def __init__(self, policy: FsyncPolicy, sync: Callable[[], None]) -> None:
        self._policy = policy
        self._sync = sync
        self._cond = threading.Condition()
        self._pending = 0  # records written since the last flush began
        self._since = time.monotonic()  # when the last flush began
        self._closing = False
        self._error: ResultsWriteError | None = None
        self._thread = threading.Thread(target=self._run, name="twinspect-fsync", daemon=True)
        self._thread.start()

    def _due(self) -> bool:
        return self._policy.due(self._pending, time.monotonic() - self._since)

    def wrote(self) -> None:
        """One more record is in the file (called by write(), after the write)."""
        with self._cond:
            self._pending += 1
            if self._due():
                self._cond.notify()

    def check(self) -> None:
        """Raise the error of a flush that failed."""
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closing or self._due(), timeout=self._policy.seconds
                )
                if self._closing:
                    return
                if not self._due():
                    continue
                self._pending, self._since = 0, time.monotonic()
            try:
                self._sync()  # outside the lock: write() goes on meanwhile
            except ResultsWriteError as e:
                self._error = e
                return

    def stop(self) -> int:
        """Stop the thread (after a flush in progress ends); how many records wrote() counted
        since the last flush began, for close() to flush. Raises a flush's error."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self.check()
        return self._pending


class RecordWriter:
    """Writes records to a file (or stdout), each as one whole line with one write().

    A file is written through its descriptor, unbuffered: a record is in the file (the page
    cache) when write() returns, and a write that fails part-way — a full disk, EIO, a file size
    limit — is cut back to the last complete line, so the file never ends in a torn record.
    """

    def __init__(
        self,
        path: Path | None,
        fmt: str = "jsonl",
        append: bool = False,
        fsync: FsyncPolicy | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.count = 0
        self.fsync = fsync or FsyncPolicy()
        self.fsyncs = 0  # how many times the file was forced to disk
        self._unsynced = 0  # `every`: records written since the last fsync (batch: _Flusher's)
        self._synced_at = time.monotonic()
        self._flusher: _Flusher | None = None
        self._fd: int | None = None
        self._good = 0  # file size after the last complete record
        if path is not None:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(path, flags, 0o666)  # 0666 & ~umask, like open()
                self._good = os.lseek(self._fd, 0, os.SEEK_END)
            except OSError as e:
                if self._fd is not None:
                    os.close(self._fd)
                raise BadInput(f"--out {path}: cannot open for writing ({e.strerror})") from None
        if self._fd is not None and self.fsync.mode == "batch":
            self._flusher = _Flusher(self.fsync, self._sync)
        if fmt == "csv" and self._good == 0:
            self._write(",".join(CSV_FIELDS) + "\r\n")

    def _write(self, text: str) -> None:
        if self._fd is None:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:
                raise
            except OSError as e:
                raise ResultsWriteError(f"stdout: cannot write ({e.strerror or e})") from None
            return
        if self._flusher is not None:
            self._flusher.check()  # a failed flush stops the run, as it did in write()
        data = text.encode("utf-8")
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (a filling disk, a signal)
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            self._cut_back()
            raise ResultsWriteError(
                f"--out {self.path}: cannot write ({e.strerror or e}); "
                f"{self.count} records written this run are kept, whole"
            ) from None
        self._good += len(data)
        if self._flusher is not None:
            self._flusher.wrote()
            return
        self._unsynced += 1
        if self.fsync.due(self._unsynced, time.monotonic() - self._synced_at):
            self._sync()
            self._unsynced, self._synced_at = 0, time.monotonic()

    def _sync(self) -> None:
        """fsync the file; a failure means records may not be on the disk: stop, exit 2. Runs
        on the inspection thread (`every`, close) or the flusher's (`batch`), never on both at
        once: close() stops the flusher first."""
        try:
            os.fsync(self._fd)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EROFS):  # a device or pipe: nothing to force
                return
            raise ResultsWriteError(
                f"--out {self.path}: cannot force records to disk ({e.strerror or e})"
            ) from None
        self.fsyncs += 1

    def _cut_back(self) -> None:
        """Truncate a partly written record (devices and pipes cannot be truncated: nothing
        of a failed write reached them that could be removed)."""
        try:
            os.ftruncate(self._fd, self._good)
            os.lseek(self._fd, self._good, os.SEEK_SET)
        except OSError:
            pass

    def write(self, rec: dict) -> None:
        if self.fmt == "csv":
            buf = io.StringIO()
            csv.DictWriter(buf, CSV_FIELDS).writerow(_csv_row(rec))
            self._write(buf.getvalue())
        else:
            self._write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.count += 1

    def close(self) -> None:
        """Force what is left to disk (unless --fsync off) and close; safe to call twice.
        Raises ResultsWriteError when a flush failed, here or on the flusher's thread."""
        if self._fd is not None:
            try:
                if self._flusher is not None:
                    flusher, self._flusher = self._flusher, None
                    self._unsynced = flusher.stop()
                if self.fsync.mode != "off" and self._unsynced:
                    self._sync()
            finally:
                os.close(self._fd)
                self._fd = None


STATE_SUFFIX = ".run.json"


def state_path(out: Path) -> Path:
    """`results.jsonl` → `results.jsonl.run.json`, beside it."""
    return out.with_name(out.name + STATE_SUFFIX)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunIdentity:
    """What decides a results file's verdicts; a resume must match it (see the module doc)."""

    source: str  # as given on the command line
    source_resolved: str  # absolute path for files and folders, else as given
    model_dir: str
    model_sha256: str
    threshold: float
    threshold_from: str
    roi: dict | None
    format: str

    def differences(self, recorded: dict) -> list[str]:
        """What differs from a recorded identity, each as 'name now (was then)'."""
        out = []
        for key, name in (
            ("source_resolved", "source"),
            ("model_sha256", "model sha256"),
            ("threshold", "threshold"),
            ("roi", "roi"),
        ):
            now, then = getattr(self, key), recorded.get(key)
            if now != then:
                if key == "model_sha256":
                    now, then = f"{now[:12]}… ({self.model_dir})", f"{str(then)[:12]}…"
                    then += f" ({recorded.get('model_dir')})"
                out.append(f"{name} {now} (was {then})")
        return out


def check_resume(out: Path, ident: RunIdentity, force: bool) -> list[str]:
    """Refuse (BadInput) to resume `out` with a run that differs from the one that made it;
    with `force`, return the differences so the state file can say the file mixes runs."""
    if not out.is_file() or out.stat().st_size == 0:
        return []  # nothing recorded yet: a fresh start
    sp = state_path(out)
    try:
        recorded = json.loads(sp.read_text())
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        if force:
            return [f"unknown ({sp.name} missing)"]
        raise BadInput(
            f"--resume {out}: {sp} is missing, so nothing says which source, model and "
            "threshold made these results; --force to resume anyway"
        ) from None
    except (OSError, ValueError) as e:
        if force:
            return [f"unknown ({sp.name} unreadable)"]
        raise BadInput(
            f"--resume {out}: {sp} is not readable ({e}); --force to resume anyway"
        ) from None
    if recorded.get("format") != ident.format:
        raise BadInput(
            f"--resume {out}: the file holds {recorded.get('format')} records, this run writes "
            f"{ident.format}; one file cannot mix formats (check --csv)"
        )
    diffs = ident.differences(recorded)
    if diffs and not force:
        raise BadInput(
            f"--resume {out}: recorded with a different " + "; ".join(diffs) + ". Resume with "
            "the same ones, write a new --out, or --force to mix both runs in one file"
        )
    return diffs


def write_state(out: Path, ident: RunIdentity, resumed: bool, forced: list[str]) -> None:
    """Write `<out>.run.json` (atomically) for a fresh run, or add this resume to it. Only for
    regular files: a device or pipe as --out has nothing to resume."""
    if not out.is_file():
        return
    sp = state_path(out)
    state: dict = {}
    if resumed:
        try:
            state = json.loads(sp.read_text())
        except (OSError, ValueError):
            state = {}
    if not isinstance(state, dict) or not state:
        state = {**asdict(ident), "results": out.name, "started": _now(), "resumes": []}
    if resumed:
        state.setdefault("resumes", []).append({"started": _now(), "forced": forced})
    try:
        atomic_write_bytes(sp, (json.dumps(state, indent=1) + "\n").encode())
    except OSError as e:
        raise BadInput(f"{sp}: cannot write the run's state ({e.strerror or e})") from None


def _lock_holder(fd: int) -> int | None:
    """The pid holding a flock on fd's file, from /proc/locks (Linux); None when unknown."""
    st = os.fstat(fd)
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        f = line.split()
        if len(f) < 6 or f[1] != "FLOCK":  # "1: -> FLOCK …" is a waiter, not the holder
            continue
        dev_ino = f[5].split(":")
        if len(dev_ino) == 3 and dev_ino[2] == str(st.st_ino) and f[4].isdigit():
            major, minor = int(dev_ino[0], 16), int(dev_ino[1], 16)
            if (major, minor) == (os.major(st.st_dev), os.minor(st.st_dev)):
                return int(f[4])
    return None


class ResultsLock:
    """An exclusive, non-blocking flock on the results file itself, held until release().

    On the file rather than a lock file beside it: nothing is left behind to clean up, and the
    lock goes with the process, so a run killed with -9 never blocks the next one. Refuses with
    BadInput (exit 2) naming the file and, where /proc/locks tells, the other process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError as e:
            raise BadInput(f"--out {path}: cannot open for writing ({e.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _lock_holder(self._fd)
            self.release()
            who = f"another process (pid {pid})" if pid else "another process"
            raise BadInput(
                f"--out {path}: already being written by {who}; wait for that run to end, "
                "stop it, or choose another --out"
            ) from None

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cut_torn_tail(path: Path) -> int:
    """Truncate a last line without its newline (a write cut by kill -9); bytes removed."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        back = min(size, 1 << 20)
        f.seek(size - back)
        tail = f.read(back)
        keep = size - back + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def recorded_frames(path: Path, fmt: str = "jsonl") -> tuple[frozenset[int], int]:
    """Frame indices already recorded in `path`, and how many torn bytes were cut off its end.

    A line that does not parse (only ever the last one, after a kill -9) is not counted, so that
    frame is judged again.
    """
    if not path.exists():
        return frozenset(), 0
    cut = _cut_torn_tail(path)
    done: set[int] = set()
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "csv":
            for row in csv.DictReader(f):
                if row.get("event") == "frame" and (row.get("frame") or "").isdigit():
                    done.add(int(row["frame"]))
        else:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("frame"), int):
                    done.add(rec["frame"])
    return frozenset(done), cut
