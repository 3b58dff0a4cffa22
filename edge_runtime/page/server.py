"""`twinspect serve`: the inspection and its page in one process.

Threads, on a 2-core line PC:
- the station (`station.run_station`, the same code as `twinspect run`) in a thread of its own:
  its feeders and its one inference loop, untouched except for the two hooks the page sets;
- uvicorn in another thread, serving the page from one asyncio loop (JPEG encoding and file
  reads go to its small thread pool, off the loop);
- the main thread holds the signal handlers: SIGINT/SIGTERM stop the station (the frame in
  hand is finished, every record flushed, the summaries printed) and then the page.

Order at start, so a mistake costs nothing: the page extra, the token file, the model
directories and the listening socket are checked first (one line, exit 2); then the station
opens its cameras — a camera that cannot open is one line, exit 2, before the page serves —
and only then does the page listen. The page stays up when an offline source ends (the counts
are still worth reading) until a signal, or at once with `--exit-when-done`.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import BadInput
from edge_runtime.runner import _signals, _Stop
from edge_runtime.station import Station, run_station


class PageServer:
    """uvicorn on a socket bound up front (a port in use is refused before anything runs),
    serving in a daemon thread; `close()` ends open streams and stops it."""

    def __init__(self, app, host: str, port: int, closing: threading.Event | None = None) -> None:
        self.app, self.closing = app, closing
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
        except OSError as e:
            raise BadInput(
                f"page on {host}:{port}: cannot listen ({e.strerror or e}); choose another --port"
            ) from None
        self.host, self.port = self.sock.getsockname()[:2]
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off",
            proxy_headers=False, server_header=False, timeout_graceful_shutdown=2,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self.sock]}, name="twinspect-page",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise BadInput(f"page on {self.url}: the server did not start")

    def close(self) -> None:
        if self.closing is not None:
            self.closing.set()  # event and MJPEG streams end at their next tick
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sock.close()


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    token_file: Path | None = None
    review: Path | None = None  # default: <first camera's out>.review/
    run_dir: Path | None = None  # a training run's validation.npz, for the threshold preview
    shifts: str = "06:00,14:00,22:00"
    exit_when_done: bool = False


def check_cameras(st: Station) -> None:
    """The page reads each camera's JSON-lines results file and keeps its NG crops beside it."""
    for cfg in st.cameras:
        if cfg.out is None:
            raise BadInput(f"{cfg.camera}: serve needs --out FILE (the page reads its records)")
        if cfg.fmt != "jsonl":
            raise BadInput(f"{cfg.camera}: serve reads JSON-lines results; drop --csv")
        if cfg.save_ng is None:
            cfg.save_ng = cfg.out.with_name(cfg.out.name + ".ng")


def serve(st: Station, opts: ServeOptions, log=None) -> int:
    """Run the station with its page until a signal (see the module doc); the exit code."""
    from edge_runtime.page import auth
    from edge_runtime.page.app import create_app
    from edge_runtime.page.state import PageState
    from edge_runtime.page.stats import Shifts

    log = log or sys.stderr
    check_cameras(st)
    shifts = Shifts.parse(opts.shifts)
    token_path = opts.token_file or auth.default_token_path()
    token, made = auth.load_or_create(token_path)
    first = st.cameras[0].out
    review = opts.review or first.with_name(first.name + ".review")
    state = PageState(st.cameras, review, shifts, opts.run_dir)
    page = PageServer(create_app(state, token, opts.host), opts.host, opts.port, state.closing)

    stop, opened = _Stop(), threading.Event()
    outcome: dict = {}

    def on_open(cams: list) -> None:
        state.attach(cams)
        opened.set()

    def inspect() -> None:
        try:
            run_station(st, stop=stop, on_open=on_open)
            state.inspection["state"] = "done"
        except BaseException as e:  # handed to the main thread, which says it and exits
            outcome["error"] = e
            state.inspection.update(state="failed", error=str(e))
        finally:
            opened.set()

    worker = threading.Thread(target=inspect, name="twinspect-station", daemon=False)
    try:
        with _signals(stop):
            worker.start()
            opened.wait()
            if "error" in outcome and not state.cams:  # refused before any frame: exit 2
                raise outcome["error"]
            page.start()
            say = "made now, mode 0600" if made else "mode 0600"
            print(
                f"twinspect serve: station page on {page.url}; state changes need the token "
                f"in {token_path} ({say})",
                file=log,
                flush=True,
            )
            while not stop() and not (opts.exit_when_done and not worker.is_alive()):
                time.sleep(0.1)
    finally:
        stop.reason = stop.reason or "the page server stopping"
        if worker.ident is not None:
            worker.join()
        page.close()
    if "error" in outcome:  # the station's own error: its line and exit code (2 or 1)
        raise outcome["error"]
    return 0
