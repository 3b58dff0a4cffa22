"""Which part a record is about, when it was decided, and what the line did when that was late.

A record on its own says "frame 1834 was NG". The line needs more: which camera (a station has
several), which part (the frame counter, or an id the trigger supplies — for now a folder of
images can use each file's stem), and whether the verdict came in time. A reject gate acts at a
fixed distance down the conveyor: a verdict decided after the part has passed it changes
nothing, so what really happened to that part is the gate's fail-safe. The record says so
(`late: true`, the fail-safe as `verdict`, the model's verdict kept in `verdict_original`)
instead of pretending the model's late answer was acted on.

Times: `captured_at` and `decided_at` are wall-clock ISO 8601 with milliseconds (UTC), for
people and other systems; the deadline itself is measured on the monotonic clock (`t_mono` at
capture, `t_decided_mono` at decision), which never jumps when NTP corrects the wall clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.errors import BadInput

FAIL_SAFES = ("NG", "ERROR", "OK")
PART_ID_FROM = ("frame", "filename")
# A camera's name labels its metrics and prefixes its review images: no spaces, no slashes.
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def iso_ms(ts: float) -> str:
    """Wall-clock seconds → ISO 8601 UTC with milliseconds, e.g. 2026-11-29T03:58:00.123+00:00."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class PartPolicy:
    """How one camera names its parts and how long a verdict may take.

    deadline_ms None: no deadline (a replay, or a line without a gate). fail_safe is what the
    line does with a part whose verdict is late: NG (reject — the safe default), ERROR (route
    to manual inspection) or OK (pass; only where a missed defect costs less than a stop).
    """

    camera: str
    part_id_from: str = "frame"
    deadline_ms: float | None = None
    fail_safe: str = "NG"

    def __post_init__(self) -> None:
        if not re.match(NAME_RE, self.camera):
            raise BadInput(
                f"camera name {self.camera!r}: 1–64 letters, digits, '_', '-' or '.', starting "
                "with a letter or digit"
            )
        if self.part_id_from not in PART_ID_FROM:
            raise BadInput(
                f"part_id_from {self.part_id_from!r}: expected one of {', '.join(PART_ID_FROM)}"
            )
        if self.fail_safe not in FAIL_SAFES:
            raise BadInput(f"fail_safe {self.fail_safe!r}: expected one of {', '.join(FAIL_SAFES)}")
        if self.deadline_ms is not None and not self.deadline_ms > 0:
            raise BadInput(f"deadline_ms must be > 0, got {self.deadline_ms}")

    def part_id(self, index: int, name: str) -> int | str:
        """The frame counter, or the image file's stem (the part's serial, when the trigger
        names files after it)."""
        return Path(name).stem if self.part_id_from == "filename" else index

    def is_late(self, captured_mono: float, decided_mono: float) -> bool:
        """Decided more than deadline_ms after capture (never, without a deadline)."""
        if self.deadline_ms is None:
            return False
        return (decided_mono - captured_mono) * 1000.0 > self.deadline_ms


def stamp(
    rec: dict, policy: PartPolicy, index: int, name: str, decided_ts: float, decided_mono: float
) -> bool:
    """Add camera, part id and decision times to a frame record; apply the deadline.

    `rec` must hold the capture times (`ts`, `t_mono`) and the model's `verdict`. Pure: the
    decision time is given, so a deadline can be tested with exact numbers. Returns whether the
    verdict was late (and so replaced by the fail-safe).
    """
    rec["camera"] = policy.camera
    rec["part_id"] = policy.part_id(index, name)
    rec["captured_at"] = iso_ms(rec["ts"])
    rec["decided_at"] = iso_ms(decided_ts)
    rec["t_decided_mono"] = round(decided_mono, 6)
    rec["decision_ms"] = round((decided_mono - rec["t_mono"]) * 1000.0, 3)
    late = bool(policy.is_late(rec["t_mono"], decided_mono))
    rec["late"] = late  # a real bool: the OPC UA sink counts `late is True`
    if late:
        rec["verdict_original"] = rec["verdict"]
        rec["verdict"] = policy.fail_safe
        why = (
            f"late: decided {rec['decision_ms']:g} ms after capture "
            f"(deadline {policy.deadline_ms:g} ms)"
        )
        rec["reason"] = f"{why}; {rec['reason']}" if rec.get("reason") else why
    return late
