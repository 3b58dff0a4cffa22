"""What the line tests share: `twinspect run` as a child process, bounded waits, its records,
/metrics and /healthz, and the plant's stand-ins (edge_runtime/linesim.py: broker, PLC, MJPEG
camera, subscriber — there because the soak benchmark uses them too).

Imported by tests/test_station.py, tests/test_sinks.py and tests/test_line_integration.py;
fixtures built on these are in conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge_runtime.linesim import (
    MOSQUITTO,
    Broker,
    MjpegCamera,
    Plc,
    Subscriber,
    first_arrivals,
    free_port,
    listening,
    metrics_url,
    queues_drained,
    read_opcua,
    scrape,
    sink_series,
    wait_until,
)
from edge_runtime.linesim import http_get as get
from edge_runtime.sinks.modbus import NO_SCORE, sequence_value
from edge_runtime.synthetic.writer import Config, generate

__all__ = [
    "MOSQUITTO",
    "REPO",
    "Broker",
    "Child",
    "MjpegCamera",
    "Plc",
    "Subscriber",
    "Webhook",
    "expected_registers",
    "first_arrivals",
    "frames_of",
    "free_port",
    "get",
    "listening",
    "metrics_url",
    "queues_drained",
    "read_opcua",
    "records",
    "scrape",
    "sink_series",
    "wait_for",
    "write_station",
]

REPO = Path(__file__).resolve().parents[1]


def wait_for(what: str, cond: Callable[[], object], proc=None, timeout: float = 60.0):
    """Poll until cond() is truthy and return it (a bounded wait for a condition, never an
    assertion about how long it took); fail early if the child process `proc` died."""

    def check() -> object:
        got = cond()
        if not got and proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}")
        return got

    try:
        return wait_until(check, what, timeout)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")


def records(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def frames_of(path: Path) -> list[dict]:
    return [r for r in records(path) if r["event"] == "frame"]


def write_station(folder: Path, text: str) -> Path:
    path = folder / "station.toml"
    path.write_text(text)
    return path


class Child:
    """`twinspect run …` in a child process; stdout and stderr lines collected as they come."""

    def __init__(self, *argv) -> None:
        cmd = [sys.executable, "-m", "edge_runtime.cli", "run", *map(str, argv)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self.out.extend, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self.err.extend, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def finish(self, sig: int | None = signal.SIGTERM, timeout: float = 60.0) -> str:
        """Signal it (if still running), wait for it, return its stdout."""
        if sig is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        for t in self._readers:
            t.join(timeout=10)
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def expected_registers(seq: int, rec: dict) -> list[int]:
    """Modbus registers +0…+5 of a part, computed by hand from its record (the register map in
    edge_runtime/sinks/modbus.py's docstring), for the part the sink sent as `seq`."""
    pid, score = rec["part_id"], rec["score"]
    s = NO_SCORE if score is None else round(score * 10000)
    code = {"OK": 1, "NG": 2, "ERROR": 3}[rec["verdict"]]
    return [pid >> 16, pid & 0xFFFF, s >> 16, s & 0xFFFF, code, sequence_value(seq)]


class Webhook:
    """An HTTP endpoint on 127.0.0.1 collecting the verdicts POSTed to it (JSON bodies), after
    answering 503 to the first `refusals` requests; with `token`, any other bearer is a 401."""

    def __init__(self, refusals: int = 0, token: str | None = None) -> None:
        self.got: list[dict] = []
        left = [refusals]
        got = self.got

        class Endpoint(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if left[0] > 0:  # a server that is briefly unavailable
                    left[0] -= 1
                    self.send_response(503)
                elif token and self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401)
                else:
                    got.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
        self.url = f"http://127.0.0.1:{self._server.server_port}/verdicts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def small_line(tmp_path_factory, n_frames: int) -> Path:
    """A small generated line (4 train, 4 test images a label) with an n_frames recording,
    its frames, line.avi and roi.json: what the line tests judge."""
    out = tmp_path_factory.mktemp("line") / "line"
    generate(Config(out=out, n_train=4, n_test=4, n_frames=n_frames, workers=1))
    return out
