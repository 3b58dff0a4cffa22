"""Threshold sign-off: sidecar versions and an append-only, hash-chained change log.

A threshold changed on the line is a quality decision, so it must be traceable and undoable:
- every sidecar that was ever in force is kept whole, `DIR/versions/model.vN.json` (the schema is
  untouched: a version is a copy of `model.json` written through `Sidecar.save`, with only the
  threshold value and its policy text changed);
- `DIR/changes.jsonl` says who, when, why, old and new, one JSON line per version; each line
  carries the SHA-256 of the line before it, so an edited, removed or reordered line breaks the
  chain and is refused (with nothing changed) instead of being silently extended;
- a rollback restores an earlier version by writing it again as a new version, so the log only
  ever grows and says that the rollback happened.

Before the first change the sidecar as found becomes version 1 ("baseline"). A `model.json`
that differs from the last logged version (a re-export, or a hand edit — the README allows it)
is logged as an "external" version before the change, so the log never hides that it happened.
Writes: version file, then `model.json` (both atomic), then the log line (fsynced), all under an
exclusive flock on the log, so two processes never interleave versions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.errors import BadInput, TwinspectError
from edge_runtime.files import atomic_write_bytes
from edge_runtime.sidecar import Sidecar

GENESIS = "0" * 64  # the "previous hash" of the first entry
VERSION_RE = re.compile(r"^model\.v(\d+)\.json$")


class LogTampered(TwinspectError):
    """The change log's hash chain is broken, or versions and log disagree: nothing changes
    until a person restores them (HTTP 409)."""


class NoSuchVersion(BadInput):
    """A rollback to a version the log does not hold (HTTP 404)."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_threshold(value: object) -> float:
    """A threshold a person may sign off: a finite number ≥ 0 (JSON true/false are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"threshold must be a number, got {json.dumps(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise BadInput(f"threshold must be finite, got {v}")
    if v < 0:
        raise BadInput(f"threshold must be ≥ 0 (scores are distances), got {v:g}")
    return v


def check_text(value: object, what: str, required: bool, limit: int) -> str:
    """A reason or a name: text, stripped, within `limit` characters."""
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise BadInput(f"{what} is required: say why, in words" if required else f"{what}: text")
    text = " ".join(value.split())
    if len(text) > limit:
        raise BadInput(f"{what} is {len(text)} characters; at most {limit}")
    return text


class ModelVersions:
    """The versions and change log of one model directory."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = Path(model_dir)
        self.sidecar_path = self.dir / "model.json"
        self.versions_dir = self.dir / "versions"
        self.log_path = self.dir / "changes.jsonl"

    def version_path(self, n: int) -> Path:
        return self.versions_dir / f"model.v{n}.json"

    # ---------------------------------------------------------------- reading
    def _chain(self) -> _Chain:
        """The log read and its hash chain checked; LogTampered (naming the line) when broken."""
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            raw = b""
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        where = str(self.log_path)
        chain = _Chain()
        for i, line in enumerate(lines, 1):
            try:
                e = json.loads(line)
            except ValueError:
                raise LogTampered(f"{where}: line {i} is not JSON; the log was edited") from None
            if not isinstance(e, dict) or e.get("prev_sha256") != chain.prev:
                raise LogTampered(
                    f"{where}: line {i} does not carry the SHA-256 of line {i - 1}: the hash "
                    "chain is broken (a line was edited, removed or reordered); nothing changed"
                    " — restore the log from a backup"
                )
            if e.get("version") != i or not isinstance(e.get("sidecar_sha256"), str):
                raise LogTampered(f"{where}: line {i} is not version {i} of the log")
            chain.entries.append(e)
            chain.prev = _sha(line)
        extra = self._version_numbers() - set(range(1, len(chain.entries) + 1))
        if extra:
            raise LogTampered(
                f"{where}: versions/model.v{min(extra)}.json has no line in the log (the log "
                "was cut short, or a change was interrupted); nothing changed — restore the log "
                "from a backup, or remove that file if no change was signed off"
            )
        return chain

    def entries(self) -> list[dict]:
        """Every log entry, oldest first, the chain checked."""
        return self._chain().entries

    def _version_numbers(self) -> set[int]:
        if not self.versions_dir.is_dir():
            return set()
        found = (VERSION_RE.match(p.name) for p in self.versions_dir.iterdir())
        return {int(m.group(1)) for m in found if m}

    def current(self, entries: list[dict] | None = None) -> int | None:
        """The version `model.json` is, when it is the last logged one; None otherwise."""
        entries = self.entries() if entries is None else entries
        if not entries:
            return None
        try:
            sha = _sha(self.sidecar_path.read_bytes())
        except OSError:
            return None
        return entries[-1]["version"] if entries[-1]["sidecar_sha256"] == sha else None

    def history(self) -> dict:
        """For the page: the entries newest first, and whether the log holds together."""
        try:
            entries = self.entries()
        except LogTampered as e:
            return {"ok": False, "error": str(e), "entries": [], "current": None}
        public = [{k: v for k, v in e.items() if k != "prev_sha256"} for e in entries]
        return {"ok": True, "entries": public[::-1], "current": self.current(entries)}

    # ---------------------------------------------------------------- writing
    @contextmanager
    def _locked(self) -> Iterator[tuple[int, _Chain]]:
        """The log locked (flock, exclusive) and read: one change at a time, across processes."""
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd, self._chain()
        finally:
            os.close(fd)

    def _write_version(self, fd: int, chain: _Chain, sidecar: Sidecar | bytes, entry: dict) -> dict:
        """Version file, then model.json (both atomic), then the log line (see the module doc).
        Bytes: the sidecar as found, kept as it is (model.json is not rewritten)."""
        n = len(chain.entries) + 1
        if isinstance(sidecar, bytes):
            atomic_write_bytes(self.version_path(n), sidecar)
        else:
            sidecar.save(self.version_path(n))
        data = self.version_path(n).read_bytes()
        if not isinstance(sidecar, bytes):
            sidecar.save(self.sidecar_path)
        entry = {"version": n, **entry, "sidecar_sha256": _sha(data), "prev_sha256": chain.prev}
        line = json.dumps(entry, separators=(",", ":")).encode()
        os.write(fd, line + b"\n")
        os.fsync(fd)
        chain.entries.append(entry)
        chain.prev = _sha(line)
        return entry

    def _start(self, fd: int, chain: _Chain) -> Sidecar:
        """The sidecar in force, logged as a version first when the log does not know it."""
        found = self.sidecar_path.read_bytes()
        current = Sidecar.load(self.sidecar_path)
        if chain.entries and self.current(chain.entries) is not None:
            return current
        first = not chain.entries
        why = (
            "the sidecar as found, kept before the first change"
            if first
            else "model.json was changed outside the page (a re-export or a hand edit)"
        )
        self._write_version(
            fd,
            chain,
            found,
            {"action": "baseline" if first else "external", "at": _now(),
             "who": "twinspect serve", "why": why, "old": None, "new": current.threshold.value},
        )  # fmt: skip
        return current

    def _exported(self, chain: _Chain) -> Sidecar:
        """The last version that came from outside the page: what calibration chose."""
        n = max(e["version"] for e in chain.entries if e["action"] in ("baseline", "external"))
        return Sidecar.load(self.version_path(n))

    def set_threshold(self, value: object, reason: object, who: str, client: str = "") -> dict:
        """Sign off a new threshold: a new version, logged. Refusals change nothing."""
        value = check_threshold(value)
        why = check_text(reason, "reason", True, 500)
        with self._locked() as (fd, chain):
            current = self._start(fd, chain)
            base = self._exported(chain).threshold
            policy = (
                f"manual: signed off on the station page, version {len(chain.entries) + 1} "
                f"(calibrated {base.policy} at {base.value:.6g})"
            )
            new = replace(current, threshold=replace(current.threshold, value=value, policy=policy))
            return self._write_version(
                fd,
                chain,
                new,
                {"action": "threshold", "at": _now(), "who": who, "client": client, "why": why,
                 "old": current.threshold.value, "new": value},
            )  # fmt: skip

    def rollback(self, version: object, reason: object, who: str, client: str = "") -> dict:
        """Restore version N as a new version. Refused (nothing changed): a version the log
        does not hold, a version file that is not what the log says, another model.onnx's."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise BadInput(f"version must be a whole number, got {json.dumps(version)}")
        why = check_text(reason, "reason", True, 500)
        with self._locked() as (fd, chain):
            n = len(chain.entries)
            if not 1 <= version <= n:
                have = f"versions 1–{n}" if n else "no versions yet"
                raise NoSuchVersion(f"version {version} does not exist ({self.log_path}: {have})")
            path = self.version_path(version)
            try:
                data = path.read_bytes()
            except OSError:
                raise LogTampered(f"{path}: missing, though the log holds it") from None
            if _sha(data) != chain.entries[version - 1]["sidecar_sha256"]:
                raise LogTampered(f"{path}: not the file the log recorded; nothing changed")
            old = Sidecar.load(path)
            current = self._start(fd, chain)
            if old.model_sha256 != current.model_sha256:
                raise BadInput(
                    f"version {version} belongs to another model.onnx (sha256 "
                    f"{old.model_sha256[:12]}…); a rollback restores this model's thresholds"
                )
            return self._write_version(
                fd,
                chain,
                old,
                {"action": "rollback", "restored": version, "at": _now(), "who": who,
                 "client": client, "why": why, "old": current.threshold.value,
                 "new": old.threshold.value},
            )  # fmt: skip


@dataclass
class _Chain:
    """The log as read: its entries and the SHA-256 of its last line (the next line's prev)."""

    entries: list[dict] = field(default_factory=list)
    prev: str = GENESIS


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
