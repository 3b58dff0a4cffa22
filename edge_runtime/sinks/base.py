"""The Sink interface, and what the queued sinks share.

A sink takes the records `twinspect run` writes (see `records.frame_record`) and passes the
verdicts on to the plant. Two promises, whatever the peer does: `submit` never blocks inspection
(at most one local disk write), and a record is never lost without a count (it stays in the
durable queue until the peer acknowledges it; a full queue counts what it drops).

Only verdict records are sent (`event` "frame", or none, with a verdict OK/NG/ERROR); others,
such as outage records, are counted as `skipped` (the OPC UA sink shows outages as a status).

Options come from the URL's query (`mqtt://host/line1?camera=cam2`) or from a mapping with a
`url` key, as a station file would give them; an unknown option is refused by name. Secrets are
never options themselves: `password_file=PATH` or `password_env=VAR` name where to read them.
"""

from __future__ import annotations

import logging
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from edge_runtime.errors import BadInput
from edge_runtime.sinks.queue import MAX_RECORDS, WHEN_FULL, DurableQueue, Entry, Forwarder

VERDICTS = ("OK", "NG", "NOVEL", "ERROR")
DEFAULT_CAMERA = "cam1"
# Record fields a verdict payload carries, beyond seq, camera and verdict (see the JSON Schema).
PAYLOAD_FIELDS = ("part_id", "frame", "ts", "score", "score_norm", "threshold", "reason", "late")


class Sink(ABC):
    """Where verdicts go. `target` names it without credentials (for logs and metrics)."""

    kind: str = ""
    target: str = ""

    @abstractmethod
    def submit(self, record: dict) -> None:
        """Take one record without waiting for the peer (a durable enqueue at most)."""

    @abstractmethod
    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be within `timeout`, then stop; undelivered records stay on disk."""

    @abstractmethod
    def stats(self) -> dict:
        """Counters for metrics: depth, delivered, dropped, connected, last_error, …"""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet(library: str) -> None:
    """Keep a protocol library's log lines off stderr unless the program configures logging.

    Without any handler, Python prints a library's warnings through its last-resort handler:
    a PLC or broker that is down would write a line per retry into `twinspect run`'s output,
    while the sink already reports it in stats() (connected, last_error, errors). A program
    that configures logging still receives them.
    """
    logger = logging.getLogger(library)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


def is_verdict(record: Mapping[str, Any]) -> bool:
    """Whether a record is a judged part (not an outage or another event)."""
    return record.get("event", "frame") == "frame" and record.get("verdict") in VERDICTS


def _json_number(v: Any) -> Any:
    """NaN and ±inf are not JSON: a score that is not finite is sent as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def verdict_payload(entry: Entry, camera: str) -> dict:
    """The JSON object the plant receives for one part (schemas/verdict.schema.json).

    `seq` is the queue's sequence number: it only grows, so a consumer sees order and gaps,
    and drops a duplicate (a QoS 1 re-send, a replay after a restart) by (camera, seq).
    """
    rec = entry.record
    out: dict[str, Any] = {
        "seq": entry.seq,
        "camera": str(rec.get("camera") or camera),
        "verdict": rec["verdict"],
    }
    for key in PAYLOAD_FIELDS:
        if key in rec:
            out[key] = _json_number(rec[key])
    return out


class Options:
    """One sink's options from a URL query and a mapping; every key must be used (`done`)."""

    def __init__(self, where: str, values: Mapping[str, Any]) -> None:
        self.where = where
        self._values = dict(values)

    def _take(self, name: str) -> Any:
        return self._values.pop(name, None)

    def text(self, name: str, default: str | None = None) -> str | None:
        v = self._take(name)
        return default if v is None or v == "" else str(v)

    def number(self, name: str, default: float, lo: float, hi: float = math.inf) -> float:
        v = self._take(name)
        if v is None:
            return default
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise BadInput(f"{self.where}: {name}={v!r} is not a number") from None
        if not lo <= x <= hi:
            raise BadInput(f"{self.where}: {name}={v!r} is out of range [{lo}, {hi}]")
        return x

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        x = self.number(name, default, lo, hi)
        if x != int(x):
            raise BadInput(f"{self.where}: {name}={x!r} is not a whole number")
        return int(x)

    def flag(self, name: str, default: bool = False) -> bool:
        v = self._take(name)
        if v is None:
            return default
        if isinstance(v, bool):
            return v
        if str(v).lower() in ("1", "true", "yes", "on"):
            return True
        if str(v).lower() in ("0", "false", "no", "off"):
            return False
        raise BadInput(f"{self.where}: {name}={v!r}: expected true or false")

    def path(self, name: str, must_exist: bool = True) -> Path | None:
        v = self.text(name)
        if v is None:
            return None
        p = Path(v).expanduser()
        if must_exist and not p.is_file():
            raise BadInput(f"{self.where}: {name}={p}: no such file")
        return p

    def names(self, name: str) -> list[str]:
        v = self._take(name)
        if v is None:
            return []
        items = v if isinstance(v, list | tuple) else str(v).split(",")
        return [str(i).strip() for i in items if str(i).strip()]

    def secret(self, name: str) -> str | None:
        """A secret from `<name>_file` (first line) or `<name>_env`; `<name>` itself is refused."""
        if self._take(name) is not None:
            raise BadInput(
                f"{self.where}: {name} in plain text is refused; give {name}_file=PATH "
                f"(a file readable only by the service) or {name}_env=VARIABLE"
            )
        path, env = self.text(f"{name}_file"), self.text(f"{name}_env")
        if path and env:
            raise BadInput(f"{self.where}: give {name}_file or {name}_env, not both")
        if path:
            try:
                lines = Path(path).expanduser().read_text().splitlines()
            except OSError as e:
                raise BadInput(f"{self.where}: {name}_file {path}: {e.strerror or e}") from None
            return lines[0] if lines else ""
        if env:
            if env not in os.environ:
                raise BadInput(f"{self.where}: {name}_env: the variable {env} is not set")
            return os.environ[env]
        return None

    def done(self) -> None:
        """Refuse what was not used: a misspelt option must not be ignored silently."""
        if self._values:
            raise BadInput(f"{self.where}: unknown option(s) {', '.join(sorted(self._values))}")


def parse_target(
    target: str | Mapping[str, Any], query_options: bool = True
) -> tuple[SplitResult, Options]:
    """Split a URL, or a mapping {"url": …, option: …}, into the URL and its options.

    `query_options=False` (webhooks) leaves the query in the URL: it belongs to the endpoint.
    """
    if isinstance(target, Mapping):
        values = dict(target)
        url = values.pop("url", None)
        if not isinstance(url, str) or not url:
            raise BadInput(f"sink config with keys {sorted(target)}: needs a 'url'")
    elif isinstance(target, str):
        url, values = target, {}
    else:
        raise BadInput(f"sink {type(target).__name__}: expected a URL or a mapping with a 'url'")
    parts = urlsplit(url)
    if parts.password:
        where = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="").geturl()
        raise BadInput(f"{where}: a password in the URL is refused; use password_file= or _env=")
    if query_options:
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            if k in values:
                raise BadInput(f"{url}: option {k} given twice (in the URL and the config)")
            values[k] = v
    return parts, Options(parts._replace(query="").geturl(), values)


def queue_file(queue_dir: str | Path | None, where: str, *parts: object) -> Path:
    """The sink's own queue file in `queue_dir`, named after its target (one file per sink)."""
    if queue_dir is None:
        raise BadInput(
            f"{where}: needs a queue folder (queue_dir) to keep undelivered verdicts across "
            "restarts"
        )
    name = "-".join(re.sub(r"[^A-Za-z0-9._]+", "_", str(p)).strip("_") for p in parts if p)
    return Path(queue_dir) / f"{name}.sqlite"


class QueuedSink(Sink):
    """A sink whose records go through a DurableQueue to a peer that acknowledges them.

    Subclasses implement `_deliver(entries) -> acknowledged prefix length` (raising when the
    peer is unreachable), optionally `_idle()` (a heartbeat) and `_disconnect()`, and call
    `_start()` at the end of their __init__. Queue options shared by all: max_records,
    when_full (drop-oldest | refuse-newest), fsync (a disk flush per record).
    """

    def __init__(self, target: str, path: Path, opts: Options, idle_s: float | None = None) -> None:
        self.target = target
        self.skipped = 0
        self._closed = False
        max_records = opts.integer("max_records", MAX_RECORDS, 1, 10**9)
        when_full = opts.text("when_full", WHEN_FULL[0])
        fsync = opts.flag("fsync")
        if when_full not in WHEN_FULL:
            raise BadInput(f"{opts.where}: when_full={when_full!r}: expected one of {WHEN_FULL}")
        opts.done()
        self.queue = DurableQueue(path, max_records, when_full, fsync)
        self._forwarder = Forwarder(
            self.queue,
            self._deliver,
            target,
            idle=self._idle if idle_s else None,
            idle_s=idle_s or 1.0,
        )

    def _start(self) -> None:
        self._forwarder.start()

    @abstractmethod
    def _deliver(self, entries: list[Entry]) -> int:
        """Send `entries` in order; how many leading ones the peer acknowledged."""

    def _idle(self) -> None:
        """Runs on the sender thread at least every idle_s seconds (see Forwarder)."""

    def _disconnect(self) -> None:
        """Release the connection after the sender thread stopped."""

    def submit(self, record: dict) -> None:
        if not isinstance(record, dict):
            raise BadInput(f"{self.target}: a record must be a JSON object, got {record!r:.60}")
        if not is_verdict(record):
            self.skipped += 1
            return
        self.queue.put(record)

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._forwarder.stop(timeout)
            self._disconnect()
        finally:
            self.queue.close()

    def stats(self) -> dict:
        q, f = self.queue, self._forwarder
        return {
            "kind": self.kind,
            "target": self.target,
            "depth": q.depth,
            "delivered": q.delivered,
            "dropped": q.dropped,
            "refused": q.refused,
            "write_errors": q.write_errors,
            "skipped": self.skipped,
            "connected": self._connected(),
            "errors": f.errors,
            "last_error": q.last_error or f.last_error,
        }

    def _connected(self) -> bool:
        return self._forwarder.connected
