"""Stand-ins for the plant around a station, on this machine: a Mosquitto broker, a Modbus TCP
PLC (pymodbus's own server), an MJPEG IP camera and the plant's MQTT subscriber.

Real programs and real protocol stacks, not mocks: the broker is Debian's `mosquitto` (`make
deps`), the PLC answers Modbus requests like a PLC and logs every write it receives, the camera
is an HTTP server streaming multipart JPEG, the subscriber is a paho client with a persistent
QoS 1 session. Each can be stopped and started again on the same port, which is how the soak
benchmark (`python -m edge_runtime.soak`) and the tests (tests/helpers_line.py) inject faults.
They live here rather than under tests/ because the soak, a benchmark that ships with the
runtime, needs them too, and one copy is all there should be.

The protocol libraries (paho-mqtt, pymodbus: the `line` extra) are imported when a peer is
made, never by importing this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
PLC_DEVICE = 3  # the unit id the simulated PLC answers to
REGISTERS_PER_CAMERA = 8  # holding registers +0…+7 of edge_runtime/sinks/modbus.py
COILS_PER_CAMERA = 3


def free_port() -> int:
    """A TCP port nobody listens on right now (for a peer started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_until(cond: Callable[[], object], what: str, timeout: float = 20.0) -> object:
    """Poll until cond() is truthy and return it; TimeoutError naming `what` after `timeout`
    (a bound on a wait, never a claim about how fast something is)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(0.02)


def first_arrivals(items: list) -> list:
    """Drop repeats, keeping first arrivals in order: QoS 1 may deliver a message twice (a
    re-send after a lost PUBACK), never zero times; a consumer drops duplicates by key."""
    seen: set = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def metrics_url(err_lines: list[str]) -> str | None:
    """A station's metrics base URL, from the line `twinspect run` prints on stderr."""
    for line in list(err_lines):
        if "metrics on http://" in line:
            return line.split("metrics on ")[1].split("/metrics")[0]
    return None


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is an answer too (/healthz's 503)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """A station's /metrics as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(base + "/metrics")
    if status != 200:
        raise RuntimeError(f"{base}/metrics answered {status}")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def sink_series(m: dict, name: str, kind: str) -> dict[str, float]:
    """camera → value of one sink metric (`twinspect_sink_connected`, …) from a scrape, for each
    camera's sink whose label (its target URL) starts with `kind` (mqtt, modbus, http, opc.tcp)."""
    out = {}
    for (sample, labels), value in m.items():
        lab = dict(labels)
        if sample == name and lab.get("sink", "").startswith(kind):
            out[lab["camera"]] = value
    return out


def queues_drained(base: str, kinds: tuple[str, ...]) -> bool:
    """Whether every queued sink of these kinds is connected with nothing left in its queue."""
    m = scrape(base)
    for kind in kinds:
        depth = sink_series(m, "twinspect_sink_queue_depth", kind)
        up = sink_series(m, "twinspect_sink_connected", kind)
        if not depth or set(depth.values()) != {0.0} or set(up.values()) != {1.0}:
            return False
    return True


OPCUA_NODES = (
    "LastVerdict",
    "LastPartId",
    "LastScore",
    "CountOK",
    "CountNG",
    "CountERROR",
    "CountLate",
    "Status",
)


async def _read_nodes(url: str, camera: str, security: str | None = None) -> dict:
    from asyncua import Client

    client = Client(url)
    if security:
        client.application_uri = "urn:twinspect:test:client"
        await client.set_security_string(security)
    async with client:
        ns = await client.get_namespace_index("urn:twinspect:station")
        return {
            n: await client.get_node(f"ns={ns};s={camera}.{n}").read_value() for n in OPCUA_NODES
        }


def read_opcua(url: str, camera: str = "cam1", security: str | None = None) -> dict:
    """What a SCADA client reads of one camera: asyncua's real client, by the documented node
    ids (`ns=<urn:twinspect:station>;s=<camera>.<Name>`). `security`: asyncua's security string
    (policy,mode,cert,key) for a secured endpoint."""
    from edge_runtime.sinks.base import quiet

    quiet("asyncua")  # its client warns about session timeouts on every connect
    return asyncio.run(_read_nodes(url, camera, security))


# ----------------------------------------------------------------------------- broker
class Broker:
    """A real Mosquitto on a free localhost port, with persistence so a subscriber's session
    survives a kill -9 of the broker (saved on every change)."""

    def __init__(self, folder: Path) -> None:
        if MOSQUITTO is None:
            raise FileNotFoundError("mosquitto is not installed (`make deps` installs it)")
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            f"persistence true\npersistence_location {folder}/\n"
            "autosave_on_changes true\nautosave_interval 1\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(lambda: listening(self.port) or self.proc.poll() is not None, "mosquitto")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-500:]}")

    def kill(self) -> None:
        """SIGKILL: the broker dies without a goodbye, as in a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Subscriber:
    """The plant's side: a real paho client on `topic`, QoS 1, with a persistent session (what
    the broker keeps for it while it or the broker is down is delivered when both are back)."""

    def __init__(self, port: int, client_id: str = "plant", topic: str = "line/#") -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self.got: list[tuple[str, dict, bool]] = []
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 2)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        wait_until(self.subscribed.is_set, "the subscription")

    def _on_message(self, _c: Any, _u: Any, m: Any) -> None:
        with self.lock:
            self.got.append((m.topic, json.loads(m.payload), m.retain))

    def payloads(self, leaf: str) -> list[dict]:
        with self.lock:
            return [p for t, p, _ in self.got if t.endswith("/" + leaf)]

    def seqs(self) -> list[int]:
        return [p["seq"] for p in self.payloads("verdict")]

    def verdicts(self, camera: str) -> list[dict]:
        """One camera's verdicts, duplicates dropped by (camera, seq), in arrival order."""
        got = [p for p in self.payloads("verdict") if p["camera"] == camera]
        firsts = first_arrivals([p["seq"] for p in got])
        by_seq = {p["seq"]: p for p in got}
        return [by_seq[s] for s in firsts]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ----------------------------------------------------------------------------- PLC
class Plc:
    """pymodbus's own TCP server as the PLC (device 3), on its own thread and event loop.

    `writes` logs every write request it received, in order, across restarts; a restart comes
    back with zeroed memory, like a PLC after a power cycle. `blocks` register blocks of 8
    holding registers and 3 coils: block k at hr_base 8k, coil_base 3k (one per camera).
    """

    def __init__(self, blocks: int = 2) -> None:
        self.port = free_port()
        self.blocks = blocks
        self.writes: list[tuple[int, int, list]] = []  # (function code, address, values)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Any = None

    @staticmethod
    def hr_base(block: int) -> int:
        return REGISTERS_PER_CAMERA * block

    @staticmethod
    def coil_base(block: int) -> int:
        return COILS_PER_CAMERA * block

    def address(self, block: int) -> str:
        """The --modbus / `modbus =` value for one camera's block."""
        return (
            f"127.0.0.1:{self.port}?device_id={PLC_DEVICE}&hr_base={self.hr_base(block)}"
            f"&coil_base={self.coil_base(block)}"
        )

    def _trace(self, sending: bool, pdu: Any) -> Any:
        if not sending and pdu.function_code in (5, 6, 15, 16):
            values = list(pdu.bits) if pdu.function_code in (5, 15) else list(pdu.registers)
            self.writes.append((pdu.function_code, pdu.address, values))
        return pdu

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=20)

    def start(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        size = max(16, REGISTERS_PER_CAMERA * self.blocks)

        async def serve() -> Any:
            def block(kind: Any) -> list:
                return [SimData(0, count=size, values=0 if kind else False, datatype=kind)]

            bits, regs = DataType.BITS, DataType.REGISTERS
            device = SimDevice(
                id=PLC_DEVICE, simdata=(block(bits), block(bits), block(regs), block(regs))
            )
            server = ModbusTcpServer(
                device, address=("127.0.0.1", self.port), trace_pdu=self._trace
            )
            await server.serve_forever(background=True)
            return server

        self.server = self._run(serve())

    def stop(self) -> None:
        """The PLC goes away: its connections close and its port stops answering."""
        if self.server is not None:
            self._run(self.server.shutdown())
            self.server = None

    def registers(self, count: int = 8, base: int = 0) -> list[int]:
        return self._run(self.server.async_getValues(PLC_DEVICE, 3, base, count))

    def coils(self, count: int = 3, base: int = 0) -> list[bool]:
        return self._run(self.server.async_getValues(PLC_DEVICE, 1, base, count))

    def parts(self, hr_base: int = 0) -> list[list[int]]:
        """Registers +0…+5 of every part written to the block at `hr_base`, as a PLC program
        latching on the sequence write (+5) sees them, in the order the writes came."""
        out, regs = [], [0] * REGISTERS_PER_CAMERA
        for fc, addr, values in list(self.writes):
            rel = addr - hr_base
            if fc in (6, 16) and 0 <= rel < REGISTERS_PER_CAMERA:
                regs[rel : rel + len(values)] = values
                if fc == 6 and rel == 5:
                    out.append(regs[:6])
        return out

    def part_ids(self, hr_base: int = 0) -> list[tuple[int, int]]:
        """(sequence register, part id) of every part in the block, duplicates dropped: a write
        repeated after a lost response carries the same sequence value."""
        return first_arrivals([(r[5], (r[0] << 16) | r[1]) for r in self.parts(hr_base)])

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


# ----------------------------------------------------------------------------- camera
class MjpegCamera:
    """An IP camera's MJPEG endpoint on 127.0.0.1 that can be unplugged and plugged back in (on
    the same port): multipart JPEG frames every `interval_s` until stopped or the client goes
    away, cycling through `frames` (image files)."""

    def __init__(self, frames: list[Path], interval_s: float = 0.02) -> None:
        import cv2

        self.jpegs = [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in frames]
        self._init(interval_s)

    @classmethod
    def from_images(cls, images: list[Any], interval_s: float = 0.02) -> MjpegCamera:
        """A camera streaming these images (numpy arrays, as OpenCV takes them)."""
        import cv2

        cam = cls.__new__(cls)
        cam.jpegs = [cv2.imencode(".jpg", im)[1].tobytes() for im in images]
        cam._init(interval_s)
        return cam

    def _init(self, interval_s: float) -> None:
        if not self.jpegs:
            raise ValueError("MjpegCamera needs at least one frame")
        self.interval_s = interval_s
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        jpegs, closing, interval = self.jpegs, threading.Event(), self.interval_s

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not closing.is_set():
                        jpeg = jpegs[i % len(jpegs)]
                        head = (
                            "--frame\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n"
                        )
                        self.wfile.write(head.encode() + jpeg + b"\r\n")
                        i += 1
                        time.sleep(interval)
                except OSError:  # the client hung up
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        self._closing = closing
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._closing.set()  # streams end: the client sees its camera go away
            self._server.shutdown()
            self._server.server_close()
            self._server = None
