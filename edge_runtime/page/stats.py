"""What the page counts, read from the results files themselves.

The page's figures come from each camera's JSONL, not from counters kept beside it: the file is
what the shift will be judged by, so the page can never disagree with it, and a resumed run's
earlier records count too. Each file is tailed — only the bytes added since the last look, and
only whole lines (the writer appends one whole line per record) — when a page asks, so the
inference loop does no extra work per part.

Counts are of the final verdict (a late part counts as its fail-safe, as in the summary), with
`late` counted beside; yield is OK of the parts judged (OK + NG + NOVEL). Hours and shifts are
the station's local time, from each record's capture time (`ts`).
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from edge_runtime.errors import BadInput

VERDICTS = ("OK", "NG", "NOVEL", "ERROR")
TREND_POINTS = 300  # per camera, on the score chart
RECENT_SCORES = 1000  # per camera, for the threshold preview
DRIFT_WINDOW = 200  # model-OK scores in the rolling median (as /metrics)
MAX_ITEMS = 50_000  # NG items kept per camera (the newest)
# a record's nearest known defect type, if any (edge_runtime.records: nearest_type)
NEAREST_KEYS = ("nearest_type", "nearest_defect", "defect_type")


@dataclass(frozen=True)
class Shifts:
    """Shift start times of a day (minutes after local midnight), e.g. 06:00, 14:00, 22:00."""

    starts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Shifts:
        starts = []
        for part in text.split(","):
            m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", part)
            if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
                raise BadInput(f"--shifts {text!r}: expected start times like 06:00,14:00,22:00")
            starts.append(int(m.group(1)) * 60 + int(m.group(2)))
        if len(set(starts)) != len(starts):
            raise BadInput(f"--shifts {text!r}: a start time is given twice")
        return cls(tuple(sorted(starts)))

    def key(self, when: datetime) -> str:
        """The shift `when` falls in, named by its start: '2026-11-29 06:00'."""
        minute = when.hour * 60 + when.minute
        day = when.replace(hour=0, minute=0, second=0, microsecond=0)
        earlier = [s for s in self.starts if s <= minute]
        if earlier:
            start = day + timedelta(minutes=earlier[-1])
        else:  # before the day's first shift: the previous day's last one
            start = day - timedelta(days=1) + timedelta(minutes=self.starts[-1])
        return start.strftime("%Y-%m-%d %H:%M")


def hour_key(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:00")


def local(ts: float) -> datetime:
    """A record's capture time (epoch seconds) in the station's local time."""
    return datetime.fromtimestamp(ts).astimezone()


def tally(counter: Counter) -> dict:
    """Counts of one table row, with the yield (None when nothing was judged)."""
    row = {k: counter.get(k, 0) for k in (*VERDICTS, "late", "frames")}
    judged = row["OK"] + row["NG"] + row["NOVEL"]
    row["yield"] = row["OK"] / judged if judged else None
    return row


class CameraRecords:
    """One camera's results file, tailed and folded into the page's figures. Not thread-safe
    on its own: the page updates and reads every camera under one lock (PageState.lock)."""

    def __init__(self, name: str, path: Path, ng_dir: Path | None, shifts: Shifts) -> None:
        self.name, self.path, self.shifts = name, Path(path), shifts
        self.ng_dir = ng_dir.resolve() if ng_dir is not None else None
        self._reset()

    def _reset(self) -> None:
        self._offset, self._partial = 0, b""
        self.totals: Counter = Counter()
        self.by_hour: dict[str, Counter] = {}
        self.by_shift: dict[str, Counter] = {}
        self.outages = 0
        self.trend: deque = deque(maxlen=TREND_POINTS)  # (ts, score, threshold, verdict)
        self.recent: deque = deque(maxlen=RECENT_SCORES)  # model scores, newest last
        self.ok_scores: deque = deque(maxlen=DRIFT_WINDOW)
        self.items: deque = deque(maxlen=MAX_ITEMS)  # NG parts with a saved crop, oldest first
        self.by_id: dict[int, dict] = {}  # frame → item

    def update(self) -> None:
        """Fold in the whole lines added since the last call (cheap when there are none)."""
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < self._offset:  # replaced by a new run (--overwrite)
                    self._reset()
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a whole line; a line being written else
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # not a record (never written by a run): not counted
            if isinstance(rec, dict):
                self._add(rec)

    def _add(self, rec: dict) -> None:
        if rec.get("event") == "outage":
            self.outages += 1
            return
        if rec.get("event") == "heat":  # drawn behind the line, after the part's own record
            item = self.by_id.get(rec.get("frame"))
            if item is not None:
                item["heat"] = self.inside(rec.get("saved_heat"))
            return
        if rec.get("event") != "frame" or not isinstance(rec.get("ts"), int | float):
            return
        verdict, when = rec.get("verdict"), local(rec["ts"])
        rows = (self.totals, self.by_hour.setdefault(hour_key(when), Counter()))
        for row in (*rows, self.by_shift.setdefault(self.shifts.key(when), Counter())):
            row["frames"] += 1
            row[verdict if verdict in VERDICTS else "ERROR"] += 1
            row["late"] += bool(rec.get("late"))
        score = rec.get("score")
        if not isinstance(score, int | float):
            return
        model_verdict = rec.get("verdict_original", verdict)
        self.trend.append((rec["ts"], score, rec.get("threshold"), verdict))
        self.recent.append(score)
        if model_verdict == "OK":
            self.ok_scores.append(score)
        if verdict in ("NG", "NOVEL") and rec.get("saved_crop"):
            self._add_item(rec, score, when)

    def _add_item(self, rec: dict, score: float, when: datetime) -> None:
        crop, full = self.inside(rec.get("saved_crop")), self.inside(rec.get("saved_frame"))
        if crop is None:  # a path outside this camera's NG folder is never listed or served
            return
        nearest = next((rec[k] for k in NEAREST_KEYS if rec.get(k)), None)
        if isinstance(nearest, dict):
            nearest = nearest.get("name") or nearest.get("label")
        item = {
            "id": f"{self.name}:{rec.get('frame')}",
            "camera": self.name,
            "frame": rec.get("frame"),
            "part_id": rec.get("part_id", rec.get("frame")),
            "ts": rec["ts"],
            "at": when.isoformat(timespec="seconds"),
            "score": score,
            "threshold": rec.get("threshold"),
            "nearest": None if nearest is None else str(nearest),
            "crop": crop,
            "full": full,
            "heat": None,  # where the part differs: set by the part's heat record
        }
        if len(self.items) == self.items.maxlen:
            self.by_id.pop(self.items[0]["frame"], None)
        self.items.append(item)
        self.by_id[rec.get("frame")] = item

    def inside(self, saved: object) -> str | None:
        """A saved image's path relative to the NG folder, or None when it is not inside it."""
        if not isinstance(saved, str) or self.ng_dir is None:
            return None
        p = Path(saved).resolve()
        return p.relative_to(self.ng_dir).as_posix() if p.is_relative_to(self.ng_dir) else None

    def drift(self, scale: float) -> float | None:
        """Rolling median of the last model-OK scores over `scale` (None before the first)."""
        window = sorted(self.ok_scores)
        if not window or scale <= 0:
            return None
        n = len(window)
        median = window[n // 2] if n % 2 else (window[n // 2 - 1] + window[n // 2]) / 2
        return median / scale


def tables(cams: list[CameraRecords], hours: int = 48, shifts: int = 21) -> dict:
    """Per camera and all cameras; per hour and per shift (all cameras), newest first."""

    def merged(attr: str, keep: int) -> list[dict]:
        keys = sorted({k for c in cams for k in getattr(c, attr)}, reverse=True)[:keep]
        rows = []
        for k in keys:
            total = sum((getattr(c, attr).get(k, Counter()) for c in cams), Counter())
            rows.append({"key": k, **tally(total)})
        return rows

    every = sum((c.totals for c in cams), Counter())
    return {
        "cameras": {c.name: {**tally(c.totals), "outages": c.outages} for c in cams},
        "all": tally(every),
        "hours": merged("by_hour", hours),
        "shifts": merged("by_shift", shifts),
    }
