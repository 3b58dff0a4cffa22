"""What one camera did in one run: counts, score distribution, per-stage latency, late verdicts.

Kept apart from the run loop so a station of several cameras keeps one of these per camera and
prints them one after the other, the same way a single run prints its own.

Counts are of the *final* verdict — what the line did with the part, the fail-safe for a late
one — so they agree with the records; scores and latencies are the model's, late or not.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.inspector import Judgement


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
    late: int = 0
    deadline_ms: float | None = None
    outages: int = 0
    frames_missed: int = 0
    resumed_skipped: int = 0
    save_failures: int = 0
    novel: int = 0  # of the NG count: parts like no known defect type
    stopped_by: str = ""
    resume_note: bool = False
    seconds: float = 0.0
    scores: array = field(default_factory=lambda: array("d"))
    lat: dict = field(
        default_factory=lambda: {k: array("f") for k in ("preprocess", "embed", "score", "total")}
    )

    def add(self, j: Judgement, verdict: str | None = None, late: bool = False) -> None:
        """Count one frame: `verdict` is the final one when a deadline replaced the model's."""
        verdict = verdict or j.verdict
        self.frames += 1
        self.late += late
        if verdict in ("NG", "NOVEL"):  # NOVEL is a reject too, and counted apart
            self.ng += 1
            self.novel += verdict == "NOVEL"
        elif verdict == "OK":
            self.ok += 1
        else:
            self.error += 1
        if j.score is None:
            return
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
            "novel": self.novel,
            "error": self.error,
            "late": self.late,
            "deadline_ms": self.deadline_ms,
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
        late = ""
        if self.deadline_ms is not None:
            late = f"; late {d['late']} (deadline {self.deadline_ms:g} ms)"
        lines = [
            f"twinspect run: {d['source']}",
            f"  frames {d['frames']}: OK {d['ok']}, NG {d['ng']}"
            + (f" (NOVEL {d['novel']})" if d.get("novel") else "")
            + f", ERROR {d['error']}{late}; "
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
