"""Where a camera's records go besides its results file: MQTT, Modbus, OPC UA, webhooks.

The sinks themselves are `edge_runtime/sinks/` (`open_sink(target, queue_dir=…, camera=…)`:
`submit(record)` never waits for the peer, `close(timeout)`, `stats()` with `depth`,
`delivered`, `dropped`, `connected`). This module is the only place the run touches them, so
everything a run needs to decide about sinks is decided here, once, for a single run and for a
station alike:

- which sinks a camera has: its `sinks` list (URLs; in a station file also a webhook's
  `{ url = …, token_env = … }` table, handed to open_sink as a mapping) plus the shorthands
  `mqtt` (`--mqtt URL`), `modbus` (`--modbus HOST:PORT`) and the station's `opcua_port`
  (`--opcua-port N`);
- what is refused before a model is loaded (one line, exit 2): a URL that is not one, sinks
  whose results go to stdout (a queued sink keeps undelivered verdicts in a folder beside the
  results file, and stdout has no folder), a protocol library that is not installed;
- where each camera's queues live: `OUT.sinks/`, beside its results file, so a restarted or
  resumed run finds and delivers what the last one could not;
- that an OPC UA server is opened once per endpoint and shared by the cameras naming it (a
  port serves one process once; the server shows every camera's state side by side);
- what /metrics reads from each sink's stats().

A sink never stops the line: records are in the results file first, and a sink that fails to
take one is counted by the camera (camera.py), not raised.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import threading
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from edge_runtime.errors import BadInput, MissingExtra

if TYPE_CHECKING:
    from edge_runtime.runner import RunConfig

SINK_SCHEMES = ("mqtt", "mqtts", "modbus", "opcua", "http", "https")
# Sinks that keep no queue: an OPC UA server shows the latest state, one server per endpoint.
STATE_SCHEMES = ("opcua",)
# The protocol library each kind imports when opened (the `line` extra); webhooks use urllib.
LIBRARIES = {"mqtt": "paho", "mqtts": "paho", "modbus": "pymodbus", "opcua": "asyncua"}
QUEUE_SUFFIX = ".sinks"  # OUT.sinks/: a camera's sink queues, beside its results file
# --opcua-port serves on this machine only: the endpoint has no security policy unless a
# certificate is given, so exposing it is a choice made with a full --sink opcua://… URL.
OPCUA_HOST = "127.0.0.1"


# ----------------------------------------------------------------------------- URLs
def check_sink_url(url: str) -> str:
    """The URL itself, or ValueError saying what is wrong with it (scheme://host[:port][/…])."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"expected a URL like mqtt://host:1883/prefix, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in SINK_SCHEMES:
        raise ValueError(
            f"{url!r}: unknown sink scheme {parts.scheme!r} (one of {', '.join(SINK_SCHEMES)})"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number in 1–65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if port == 0:
        raise ValueError(f"{url!r}: the port is not a number in 1–65535")
    return url


def mqtt_url(text: str) -> str:
    """`--mqtt` / `mqtt =`: an mqtt:// or mqtts:// URL (ValueError otherwise)."""
    if not isinstance(text, str) or urlsplit(text).scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"expected mqtt://HOST:PORT/PREFIX, got {text!r}")
    return check_sink_url(text)


def modbus_url(text: str) -> str:
    """`--modbus` / `modbus =`: HOST:PORT (options may follow: `plc:502?device_id=3&hr_base=8`)
    or a whole modbus:// URL, as the sink URL (ValueError otherwise)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected HOST:PORT (the PLC), got {text!r}")
    if "://" not in text:
        text = f"modbus://{text}"
    elif not text.startswith("modbus://"):
        raise ValueError(f"expected HOST:PORT or modbus://HOST:PORT, got {text!r}")
    return check_sink_url(text)


def opcua_url(port: int) -> str:
    """`--opcua-port N` / `opcua_port = N`: the station's OPC UA server on this machine."""
    return f"opcua://{OPCUA_HOST}:{port}"


def scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def sink_url(target: str | Mapping[str, Any]) -> str:
    """A sink's URL: the target itself, or the `url` of a mapping with options (a station
    file's `{ url = "https://…", token_env = "VAR" }`)."""
    return target if isinstance(target, str) else target["url"]


def sink_targets(cfg: RunConfig, opcua_port: int | None = None) -> list[str | Mapping[str, Any]]:
    """Every sink of one camera, as open_sink takes it (a URL, or a mapping with a `url`): its
    `sinks`, then the mqtt and modbus shorthands, then the OPC UA server (`opcua_port`: the
    station's, or a single run's --opcua-port)."""
    targets = list(cfg.sinks or ())
    targets += [u for u in (cfg.mqtt, cfg.modbus) if u]
    port = opcua_port if opcua_port is not None else cfg.opcua_port
    if port is not None:
        targets.append(opcua_url(port))
    by_url: dict[str, str | Mapping[str, Any]] = {}
    for target in targets:  # named twice (sinks and a shorthand): opened once
        by_url.setdefault(sink_url(target), target)
    return list(by_url.values())


def sink_urls(cfg: RunConfig, opcua_port: int | None = None) -> list[str]:
    """The URLs of sink_targets, in the same order."""
    return [sink_url(t) for t in sink_targets(cfg, opcua_port)]


def queue_dir_for(out: Path) -> Path:
    """A camera's sink queues: OUT.sinks/ beside its results file."""
    return out.with_name(out.name + QUEUE_SUFFIX)


def check_sinks(cfg: RunConfig, opcua_port: int | None = None) -> list[str]:
    """Refuse, before any model is loaded, what would fail later: a bad URL, queued sinks with
    results on stdout, a protocol library that is not installed. Returns the camera's URLs."""
    urls = sink_urls(cfg, opcua_port)
    for url in urls:
        try:
            check_sink_url(url)
        except ValueError as e:
            raise BadInput(f"{cfg.camera}: sink {e}") from None
    queued = [u for u in urls if scheme(u) not in STATE_SCHEMES]
    if queued and cfg.out is None:
        raise BadInput(
            f"sinks {', '.join(queued)} need --out FILE (out = … in a station file): they keep "
            f"undelivered verdicts in a queue folder beside it (OUT{QUEUE_SUFFIX}/), and results "
            "on stdout have none"
        )
    for url in urls:
        lib = LIBRARIES.get(scheme(url))
        if lib and importlib.util.find_spec(lib) is None:
            raise MissingExtra(f"the {scheme(url)}:// sink ({lib})", "line")
    return urls


# ----------------------------------------------------------------------------- opening
class SharedSink:
    """One sink handed records by several cameras (a station's OPC UA server: one endpoint,
    every camera's state side by side). Each camera closes its own handle, as it closes any
    sink; the server stops with the last, so no camera's state says "stopped" while it runs."""

    def __init__(self, sink: Any, users: int) -> None:
        self.sink = sink
        self.kind = getattr(sink, "kind", "")
        self.target = getattr(sink, "target", "")
        self._users = users
        self._lock = threading.Lock()

    def submit(self, record: dict) -> None:
        self.sink.submit(record)

    def stats(self) -> dict:
        return self.sink.stats()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.sink.close(timeout)


def _with_cameras(url: str, cameras: list[str]) -> str:
    """An OPC UA URL listing the cameras that share it (their nodes exist from the start),
    unless the URL already chose them."""
    parts = urlsplit(url)
    if any(k == "cameras" for k, _ in parse_qsl(parts.query)):
        return url
    query = "&".join(q for q in (parts.query, f"cameras={','.join(cameras)}") if q)
    return parts._replace(query=query).geturl()


def _queue_dir(out: Path, made: list[Path]) -> Path:
    """OUT.sinks/, created like any new folder (0777 & ~umask), so other users of the line PC
    can read the backlog exactly as far as the umask lets them read the results. A folder made
    here is added to `made`, to be removed again if opening the sinks fails."""
    path = queue_dir_for(out)
    try:
        if not path.is_dir():
            path.mkdir(parents=True)
            made.append(path)
    except OSError as e:
        why = e.strerror or e
        raise BadInput(f"{path}: cannot create the sinks' queue folder ({why})") from None
    return path


def open_sinks(cfgs: list[RunConfig], opcua_port: int | None = None) -> list[list[Any]]:
    """Open every camera's sinks; one list per camera, in `cfgs` order.

    OPC UA servers first (the likeliest to fail, on a port already taken, before any queue file
    exists), each opened once for the cameras naming it; then each camera's queued sinks, with
    their queues in OUT.sinks/ and `camera` set to the camera's name. A sink that cannot be
    opened raises its one-line error after the sinks already opened are closed.
    """
    from edge_runtime.sinks import open_sink

    targets = [sink_targets(cfg, opcua_port) for cfg in cfgs]
    per_camera: list[list[Any]] = [[] for _ in cfgs]
    opened: list[Any] = []
    made: list[Path] = []
    try:
        shared: dict[str, list[int]] = {}
        for i, cam_targets in enumerate(targets):
            for url in map(sink_url, cam_targets):
                if scheme(url) in STATE_SCHEMES:
                    shared.setdefault(url, []).append(i)
        for url, users in shared.items():
            names = [cfgs[i].camera for i in users]
            sink = open_sink(_with_cameras(url, names), camera=names[0])
            opened.append(sink)
            handle = SharedSink(sink, len(users))
            for i in users:
                per_camera[i].append(handle)
        for i, (cfg, cam_targets) in enumerate(zip(cfgs, targets, strict=True)):
            queued = [t for t in cam_targets if scheme(sink_url(t)) not in STATE_SCHEMES]
            if not queued:
                continue
            folder = _queue_dir(cfg.out, made)
            for target in queued:
                sink = open_sink(target, queue_dir=folder, camera=cfg.camera)
                opened.append(sink)
                per_camera[i].append(sink)
    except BaseException:
        for sink in reversed(opened):
            with suppress(Exception):  # closing on the way out of a failure: the first error wins
                sink.close(1.0)
        for folder in made:  # made by this call, so it holds only empty queues: no leftovers
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return per_camera


# ----------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class SinkStats:
    """What /metrics shows of one sink; None where the sink does not say (an OPC UA server
    keeps no queue, so it has a `connected` and nothing else)."""

    depth: float | None = None
    dropped: float | None = None
    delivered: float | None = None
    connected: float | None = None


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def sink_stats(sink: Any) -> SinkStats:
    """A sink's stats() as /metrics reads it (`depth`, `dropped`, `delivered`, `connected`)."""
    try:
        st = sink.stats()
    except Exception:  # a metrics scrape must not fail because a sink misbehaves
        return SinkStats()
    if not isinstance(st, dict):
        return SinkStats()
    return SinkStats(
        depth=_number(st.get("depth")),
        dropped=_number(st.get("dropped")),
        delivered=_number(st.get("delivered")),
        connected=_number(st.get("connected")),
    )


def sink_label(sink: Any) -> str:
    """A sink's name for metrics and messages: its target, which never holds credentials (the
    sinks refuse a password in a URL); user@ is dropped all the same."""
    target = str(getattr(sink, "target", "") or type(sink).__name__)
    parts = urlsplit(target)
    if parts.username is not None:
        return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
    return target
