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
import time
from collections.abc import Callable
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
    scrape,
)
from edge_runtime.linesim import http_get as get

__all__ = [
    "MOSQUITTO",
    "REPO",
    "Broker",
    "Child",
    "MjpegCamera",
    "Plc",
    "Subscriber",
    "first_arrivals",
    "frames_of",
    "free_port",
    "get",
    "listening",
    "metrics_url",
    "records",
    "scrape",
    "wait_for",
    "write_station",
]

REPO = Path(__file__).resolve().parents[1]


def wait_for(what: str, cond: Callable[[], object], proc=None, timeout: float = 60.0):
    """Poll until cond() is truthy and return it (a bounded wait for a condition, never an
    assertion about how long it took); fail early if the child process `proc` died."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


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
