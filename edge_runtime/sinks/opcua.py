"""OPC UA sink (asyncua): the station as an OPC UA server showing each camera's latest state.

    opcua://0.0.0.0:4840?cameras=cam1,cam2
    opcua://0.0.0.0:4840?cert=/etc/twinspect/server.der&key=/etc/twinspect/server.pem&trust=DIR

A state server, not a queue: a client reads (or subscribes to) the latest part's verdict and the
counters; parts between two reads are not kept here. Clients that need every part use MQTT or
Modbus with the handshake. Counters count since the server started.

Address space: namespace `urn:twinspect:station` (option namespace), the first one registered,
so its index is 2. Under Objects, one object per camera, `ns=2;s=<camera>`, with read-only
variables (node ids `ns=2;s=<camera>.<Name>`):

    LastVerdict  String    OK | NG | ERROR ("" before the first part)
    LastPartId   String    the record's part_id, else its frame index
    LastScore    Double    the score (NaN for ERROR)
    LastTime     DateTime  the frame's capture time
    CountOK, CountNG, CountNOVEL, CountERROR, CountLate   UInt32 (NOVEL parts count in NOVEL only)
    Status       String    starting | running | down (an outage not recovered) | stopped

`late` counts records whose `late` field is true: the station marks a verdict that came after
the part's deadline (the reject gate), which the verdict counters count as well.
Cameras listed in `cameras` (default: this sink's camera, cam1) exist from the start; a record
of another camera adds its object when it first comes.

Security: with no certificate, the only endpoint has security policy None — fine on localhost
or a closed machine network, as the nodes are read-only, but anyone who reaches the port reads
them. Given cert (DER or PEM) and key, the only endpoint is Basic256Sha256 Sign&Encrypt
(allow_none=true adds None back); trust=DIR then accepts only client certificates found in DIR
(or signed by a CA there); without trust, any client certificate is accepted.
"""

from __future__ import annotations

import asyncio
import math
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.sinks.base import DEFAULT_CAMERA, Sink, is_verdict, parse_target, quiet

NAMESPACE = "urn:twinspect:station"
NO_TIME = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's "no date"
START_TIMEOUT_S = 30.0
COUNTERS = {"OK": "CountOK", "NG": "CountNG", "NOVEL": "CountNOVEL", "ERROR": "CountERROR"}


@dataclass
class CameraState:
    """What the server shows for one camera; changed by submit(), written by the server loop."""

    verdict: str = ""
    part_id: str = ""
    score: float = math.nan
    time: datetime | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys([*COUNTERS.values(), "CountLate"], 0)
    )
    status: str = "starting"


class OpcUaSink(Sink):
    kind = "opcua"

    def __init__(
        self, target: str | dict, queue_dir: str | None = None, camera: str | None = None
    ) -> None:
        try:
            import asyncua  # noqa: F401  (only to fail early, with the extra's name)
        except ImportError:
            raise MissingExtra("the OPC UA sink (asyncua)", "line") from None
        quiet("asyncua")
        parts, opts = parse_target(target)
        try:
            port = parts.port or 4840
        except ValueError:
            raise BadInput(f"{opts.where}: the port is not a number") from None
        host = parts.hostname or "0.0.0.0"
        self.endpoint = f"opc.tcp://{host}:{port}{parts.path or '/'}"
        self.target = self.endpoint
        self.namespace = opts.text("namespace", NAMESPACE) or NAMESPACE
        cameras = opts.names("cameras") or [camera or DEFAULT_CAMERA]
        self._cert, self._key = opts.path("cert"), opts.path("key")
        if bool(self._cert) != bool(self._key):
            raise BadInput(f"{opts.where}: a secured endpoint needs both cert and key")
        trust = opts.text("trust")
        self._trust = Path(trust) if trust else None
        if self._trust and not self._trust.is_dir():
            raise BadInput(f"{opts.where}: trust={trust}: no such folder")
        self._allow_none = opts.flag("allow_none")
        opts.done()
        self.queue_dir = queue_dir  # unused: a state server keeps no backlog
        self._lock = threading.Lock()
        self._cams = {c: CameraState() for c in cameras}
        self._dirty: set[str] = set(cameras)
        self.skipped = 0
        self.updates = 0
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._thread_main, name="sink opcua", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self.last_error:
            self._thread.join(1.0)
            raise BadInput(f"{opts.where}: cannot start the OPC UA server ({self.last_error})")

    # -- any thread ------------------------------------------------------------------------
    def submit(self, record: dict) -> None:
        """Update the camera's state in memory and wake the server loop: never waits."""
        cam = str(record.get("camera") or next(iter(self._cams)))
        with self._lock:
            st = self._cams.setdefault(cam, CameraState())
            if record.get("event") == "outage":
                st.status = "running" if record.get("recovered", True) else "down"
            elif is_verdict(record):
                v = record["verdict"]
                st.verdict, st.status = v, "running"
                pid = record.get("part_id", record.get("frame"))
                st.part_id = "" if pid is None else str(pid)
                score = record.get("score")
                st.score = float(score) if isinstance(score, int | float) else math.nan
                st.time = _time(record.get("ts"))
                st.counts[COUNTERS[v]] += 1
                st.counts["CountLate"] += record.get("late") is True
            else:
                self.skipped += 1
                return
            self._dirty.add(cam)
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile: nothing to show it to
                loop.call_soon_threadsafe(wake.set)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            for st in self._cams.values():
                st.status = "stopped"
            self._dirty.update(self._cams)
        self._stopping = True
        self._poke()
        self._thread.join(timeout)

    def stats(self) -> dict:
        with self._lock:
            counts = {c: dict(st.counts) for c, st in self._cams.items()}
        return {
            "kind": self.kind,
            "target": self.endpoint,
            "connected": self._thread.is_alive() and self._ready.is_set(),
            "updates": self.updates,
            "skipped": self.skipped,
            "last_error": self.last_error,
            "counts": counts,
        }

    # -- the server's own thread and loop --------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as e:  # reported to __init__ (start) or in stats (later)
            self.last_error = f"{type(e).__name__}: {e}"
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from asyncua import Server, ua

        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._wake.set()  # the cameras named up front get their nodes at once
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("twinspect station")
        server.set_identity_tokens([ua.AnonymousIdentityToken])  # no user accounts here
        if self._cert and self._key:
            await server.load_certificate(str(self._cert))
            await server.load_private_key(str(self._key))
            policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
            if self._allow_none:
                policies.append(ua.SecurityPolicyType.NoSecurity)
            server.set_security_policy(policies)
            if self._trust:
                server.set_certificate_validator(await _validator(self._trust))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace(self.namespace)
        nodes: dict[str, dict[str, Any]] = {}
        async with server:
            self._ready.set()
            while True:
                await self._wake.wait()
                self._wake.clear()
                with self._lock:
                    dirty = {c: _snapshot(self._cams[c]) for c in self._dirty}
                    self._dirty.clear()
                for cam, values in dirty.items():
                    if cam not in nodes:
                        nodes[cam] = await _add_camera(server, idx, cam, ua)
                    for name, (value, vtype) in values.items():
                        variant = ua.Variant(value, getattr(ua.VariantType, vtype))
                        await nodes[cam][name].write_value(variant)
                    self.updates += 1
                if self._stopping:
                    return


def _time(ts: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(ts, UTC) if isinstance(ts, int | float) else None
    except (OverflowError, OSError, ValueError):
        return None


def _snapshot(st: CameraState) -> dict[str, tuple[Any, str]]:
    """Node name → (value, OPC UA variant type name) for one camera's state."""
    values = {
        "LastVerdict": (st.verdict, "String"),
        "LastPartId": (st.part_id, "String"),
        "LastScore": (st.score, "Double"),
        "LastTime": (st.time or NO_TIME, "DateTime"),
        "Status": (st.status, "String"),
    }
    values.update({k: (v, "UInt32") for k, v in st.counts.items()})
    return values


async def _add_camera(server: Any, idx: int, cam: str, ua: Any) -> dict[str, Any]:
    """The camera's object and its variables, with string node ids `<cam>.<Name>`."""
    obj = await server.nodes.objects.add_object(ua.NodeId(cam, idx), ua.QualifiedName(cam, idx))
    out = {}
    for name, (value, vtype) in _snapshot(CameraState()).items():
        out[name] = await obj.add_variable(
            ua.NodeId(f"{cam}.{name}", idx),
            ua.QualifiedName(name, idx),
            value,
            getattr(ua.VariantType, vtype),
        )
    return out


async def _validator(trust: Path) -> Any:
    """Accept only client certificates in `trust` (or issued by a CA there)."""
    from asyncua.crypto.truststore import TrustStore
    from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

    store = TrustStore([trust], [])
    await store.load()
    opts = CertificateValidatorOptions
    return CertificateValidator(opts.TRUSTED_VALIDATION | opts.PEER_CLIENT, store)
