"""`make soak`: a station left running against a local broker and PLC while faults come and go.

    python -m edge_runtime.soak --cameras 3 --minutes 5 [--model models/default] [--markdown]

A benchmark, not a test (it is not part of `make test`): the unit and integration tests prove
each fault once, on a few dozen parts; the soak asks whether the same promises hold for
minutes on end, thousands of parts, with the faults repeating — and what that costs in latency
and memory. It runs, on this machine:

- N MJPEG cameras (stdlib HTTP servers streaming the generated line's frames at `--fps`);
- a Mosquitto broker, a pymodbus TCP server as the PLC (one register block per camera), the
  plant's MQTT subscriber (a persistent QoS 1 session);
- `twinspect run --config station.toml` as a child process: every camera with MQTT, Modbus and
  a deadline, one OPC UA server, /metrics;
- a fault every `--fault-every` seconds, each lasting `--outage` seconds, in turn: the broker
  killed (SIGKILL) and restarted, the PLC stopped and restarted (memory zeroed), one camera's
  server stopped and started.

At the end the cameras stop, the queues drain, the station gets SIGTERM, and every camera's
JSONL is compared with what the subscriber received (duplicates dropped by (camera, seq)) and
what the PLC's register block received (repeats dropped by sequence value): a record in the
JSONL missing from either is lost. Printed: parts judged, records lost (must be 0), duplicates
dropped, late verdicts, capture → decision p50/p99, the station's RSS at start and end. With
`--markdown`, the same figures replace the section between `<!-- soak:begin -->` and
`<!-- soak:end -->` in BENCHMARKS.md. Exit 0 when nothing was lost and the station ended
cleanly, 1 otherwise, 2 for bad arguments or a missing piece (model, mosquitto, line extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.errors import BadInput, MissingExtra, TwinspectError

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
LINE_LIBRARIES = ("paho", "pymodbus", "asyncua", "prometheus_client", "pydantic")
FAULTS = ("broker", "plc", "camera")
DRAIN_S = 120.0  # bound on waiting for the queues to empty after the last fault


def _log(msg: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')}: {msg}", flush=True)


@dataclass
class Figures:
    """What the soak measured; `text()` and `markdown()` say it."""

    cameras: int
    minutes: float
    fps: float
    deadline_ms: float
    model: str
    parts: dict[str, int] = field(default_factory=dict)
    lost_mqtt: dict[str, int] = field(default_factory=dict)
    lost_plc: dict[str, int] = field(default_factory=dict)
    out_of_order: list[str] = field(default_factory=list)
    dup_mqtt: int = 0
    dup_plc: int = 0
    late: int = 0
    outages: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    rss_start_mb: float = math.nan
    rss_end_mb: float = math.nan
    rss_peak_mb: float = math.nan
    faults: Counter = field(default_factory=Counter)
    opcua_match: bool | None = None
    exit_code: int | None = None
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return sum(self.lost_mqtt.values()) + sum(self.lost_plc.values())

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.out_of_order and self.exit_code == 0

    def rows(self) -> list[tuple[str, str]]:
        f = self.faults
        per_camera = ", ".join(map(str, self.parts.values())) or "none"
        return [
            ("cameras × minutes", f"{self.cameras} × {self.minutes:g} (MJPEG at {self.fps:g} fps)"),
            ("parts judged", f"{sum(self.parts.values())} (per camera {per_camera})"),
            (
                "records lost (JSONL vs subscriber vs PLC log)",
                f"{self.lost} (MQTT {sum(self.lost_mqtt.values())}, "
                f"PLC {sum(self.lost_plc.values())})",
            ),
            ("out of order", ", ".join(self.out_of_order) or "none"),
            (
                "duplicates dropped (MQTT by (camera, seq) / PLC by sequence)",
                f"{self.dup_mqtt} / {self.dup_plc}",
            ),
            ("late verdicts", f"{self.late} (deadline {self.deadline_ms:g} ms)"),
            (
                "capture → decision p50 / p99 / max",
                f"{self.p50_ms:.1f} / {self.p99_ms:.1f} / {self.max_ms:.1f} ms",
            ),
            (
                "station RSS start → end (peak)",
                f"{self.rss_start_mb:.0f} → {self.rss_end_mb:.0f} MB ({self.rss_peak_mb:.0f})",
            ),
            (
                "faults injected",
                f"broker kill ×{f['broker']}, PLC stop ×{f['plc']}, camera stop ×{f['camera']}; "
                f"camera outages recorded {self.outages}",
            ),
            (
                "OPC UA counters = JSONL counts",
                {None: "not read", True: "yes", False: "NO"}[self.opcua_match],
            ),
            ("station exit code", str(self.exit_code)),
        ]

    def text(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        lines = [f"soak: {'PASS' if self.ok else 'FAIL'} after {self.seconds / 60:.1f} min"]
        lines += [f"  {k:<{width}}  {v}" for k, v in self.rows()]
        return "\n".join(lines)

    def markdown(self, command: str) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = [
            BEGIN,
            "## Soak: a station through broker, PLC and camera faults",
            "",
            f"Written by `{command}` on {when} ({os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}; model `{self.model}`). A station of "
            f"{self.cameras} live MJPEG cameras sends every verdict to a local Mosquitto (MQTT) "
            "and a pymodbus PLC (Modbus TCP) and serves OPC UA, while the broker is SIGKILLed, "
            "the PLC stopped and a camera unplugged, in turn; each JSONL is then compared with "
            "what the subscriber and the PLC received. The machine is shared: latencies are "
            "noisy.",
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in self.rows()],
            "",
            END,
        ]
        return "\n".join(lines)


def write_section(md: Path, section: str) -> None:
    """Replace the soak section of `md` (between its markers), or append it."""
    from edge_runtime.files import atomic_write_bytes

    text = md.read_text() if md.exists() else "# twinspect — benchmarks\n"
    start, end = text.find(BEGIN), text.find(END)
    if 0 <= start < end:
        text = text[:start] + section + text[end + len(END) :]
    else:
        text = f"{text.rstrip()}\n\n{section}\n"
    atomic_write_bytes(md, text.encode())


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def rss_mb(pid: int) -> float:
    """A process's resident set size (VmRSS), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _check(args: argparse.Namespace) -> None:
    import importlib.util

    from edge_runtime.linesim import MOSQUITTO

    if args.cameras < 1 or args.cameras > 32:
        raise BadInput(f"--cameras must be 1–32, got {args.cameras}")
    for name in ("minutes", "fps", "fault_every", "outage", "deadline_ms"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise BadInput(f"--{name.replace('_', '-')} must be > 0, got {v}")
    if args.outage >= args.fault_every:
        raise BadInput("--outage must be shorter than --fault-every")
    if not (args.model / "model.json").is_file():
        raise BadInput(
            f"--model {args.model}: no model.json there (`make export` makes models/default)"
        )
    if MOSQUITTO is None:
        raise BadInput("mosquitto is not installed (`make deps` installs it)")
    for lib in LINE_LIBRARIES:
        if importlib.util.find_spec(lib) is None:
            raise MissingExtra(f"the soak ({lib})", "line")


def _station_file(work: Path, args, cams, broker, plc, roi: str, opcua: int) -> Path:
    text = [
        f"opcua_port = {opcua}",
        "[metrics]",
        "port = 0",
        "[defaults]",
        f'model = "{args.model.resolve()}"',
        f"deadline_ms = {args.deadline_ms}",
        f'mqtt = "{broker.url}/soak"',
        f'roi = "{roi}"',
        "stale_after_s = 2",
        "reconnect_wait_s = 0.2",
        "max_reconnects = 1000000",
    ]
    for k, cam in enumerate(cams):
        text += [
            "[[cameras]]",
            f'name = "cam{k + 1}"',
            f'source = "{cam.url}"',
            f'out = "results/cam{k + 1}.jsonl"',
            f'modbus = "{plc.address(k)}"',
        ]
    path = work / "station.toml"
    path.write_text("\n".join(text) + "\n")
    return path


def _frames(work: Path) -> tuple[list[Path], str]:
    """A generated line's recording frames and their ROI (numpy + OpenCV only)."""
    from edge_runtime.synthetic.writer import Config, generate

    out = work / "line"
    generate(Config(out=out, n_train=4, n_test=4, n_frames=30, workers=1))
    roi = json.loads((out / "recording" / "roi.json").read_text())
    frames = sorted((out / "recording" / "frames").glob("*.png"))
    return frames, f"{roi['x']},{roi['y']},{roi['w']},{roi['h']}"


def _frames_judged(base: str, names: list[str]) -> dict[str, float]:
    from edge_runtime.linesim import scrape

    m = scrape(base)
    return {c: m.get(("twinspect_frames_total", (("camera", c),)), 0.0) for c in names}


def _inject(kind: str, k: int, outage: float, broker, plc, cams, alive) -> None:
    """One fault: take the peer down for `outage` seconds, then bring it back."""
    if kind == "broker":
        _log(f"fault: broker SIGKILL for {outage:g} s")
        broker.kill()
        _sleep(outage, alive)
        broker.start()
    elif kind == "plc":
        _log(f"fault: PLC stopped for {outage:g} s")
        plc.stop()
        _sleep(outage, alive)
        plc.start()
    else:
        cam = cams[k % len(cams)]
        _log(f"fault: camera cam{k % len(cams) + 1} unplugged for {outage:g} s")
        cam.stop()
        _sleep(outage, alive)
        cam.start()


def _sleep(seconds: float, alive) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not alive():
            raise RuntimeError("the station exited during the soak")
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def _compare(fig: Figures, work: Path, names: list[str], plant, plc) -> None:
    """Every camera's JSONL against the subscriber's and the PLC's view of it."""
    from edge_runtime.linesim import first_arrivals
    from edge_runtime.sinks.modbus import part_id_value, sequence_value

    latencies: list[float] = []
    for k, name in enumerate(names):
        recs = [
            json.loads(s) for s in (work / "results" / f"{name}.jsonl").read_text().splitlines()
        ]
        fig.outages += sum(r.get("event") == "outage" for r in recs)
        recs = [r for r in recs if r.get("event") == "frame"]
        fig.parts[name] = len(recs)
        fig.late += sum(r.get("late") is True for r in recs)
        latencies += [r["decision_ms"] for r in recs]
        want = [(i + 1, r["part_id"], r["verdict"]) for i, r in enumerate(recs)]
        raw = [p for p in plant.payloads("verdict") if p["camera"] == name]
        got = [(p["seq"], p["part_id"], p["verdict"]) for p in plant.verdicts(name)]
        fig.dup_mqtt += len(raw) - len(got)
        fig.lost_mqtt[name] = len(set(want) - set(got))
        plc_raw = plc.parts(plc.hr_base(k))
        plc_got = first_arrivals([(r[5], (r[0] << 16) | r[1]) for r in plc_raw])
        fig.dup_plc += len(plc_raw) - len(plc_got)
        plc_want = [(sequence_value(i + 1), part_id_value(r)) for i, r in enumerate(recs)]
        fig.lost_plc[name] = len(recs) - len(set(plc_want) & set(plc_got))
        if got != want or plc_got != plc_want:
            fig.out_of_order.append(name)
    fig.p50_ms = _percentile(latencies, 0.50)
    fig.p99_ms = _percentile(latencies, 0.99)
    fig.max_ms = max(latencies) if latencies else math.nan


def _jsonl_frames(work: Path, name: str) -> list[dict]:
    path = work / "results" / f"{name}.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "frame"]


def _all_at_subscriber(work: Path, names: list[str], plant) -> bool:
    return all(len(plant.verdicts(n)) >= len(_jsonl_frames(work, n)) for n in names)


def _opcua_match(work: Path, names: list[str], port: int) -> bool:
    from edge_runtime.linesim import read_opcua

    for name in names:
        recs = _jsonl_frames(work, name)
        n = Counter(r["verdict"] for r in recs)
        want = {"CountOK": n["OK"], "CountNG": n["NG"], "CountERROR": n["ERROR"]}
        want["CountLate"] = sum(r.get("late") is True for r in recs)
        got = read_opcua(f"opc.tcp://127.0.0.1:{port}/", name)
        if {k: got[k] for k in want} != want:
            _log(f"OPC UA {name}: { ({k: got[k] for k in want}) } != JSONL {want}")
            return False
    return True


def soak(args: argparse.Namespace) -> Figures:
    """Run the soak (see the module doc) and return its figures."""
    from edge_runtime.linesim import (
        Broker,
        MjpegCamera,
        Plc,
        Subscriber,
        free_port,
        http_get,
        metrics_url,
        queues_drained,
        wait_until,
    )

    fig = Figures(args.cameras, args.minutes, args.fps, args.deadline_ms, str(args.model))
    work = Path(args.work or tempfile.mkdtemp(prefix="twinspect-soak-")).resolve()
    for old in ("results", "broker", "line"):  # a reused --work starts afresh (queues included)
        shutil.rmtree(work / old, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    _log(f"work folder {work}")
    frames, roi = _frames(work)
    broker = Broker(work / "broker")
    broker.start()
    plc = Plc(blocks=args.cameras)
    plc.start()
    cams = [MjpegCamera(frames, interval_s=1.0 / args.fps) for _ in range(args.cameras)]
    for cam in cams:
        cam.start()
    plant = Subscriber(broker.port, client_id="soak-plant", topic="soak/#")
    opcua = free_port()
    names = [f"cam{k + 1}" for k in range(args.cameras)]
    station = _station_file(work, args, cams, broker, plc, roi, opcua)
    err_path = work / "station.err"
    # The station runs this checkout's code, whatever else is installed.
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    with open(work / "station.out", "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.cli", "run", "--config", str(station)],
            cwd=work, stdout=out, stderr=err, env=env,
        )  # fmt: skip
    t0 = time.monotonic()

    def alive() -> bool:
        return proc.poll() is None

    def err_lines() -> list[str]:
        return err_path.read_text().splitlines()

    try:
        base = wait_until(lambda: metrics_url(err_lines()) or not alive(), "metrics", 120)
        if not alive():
            raise RuntimeError(f"the station did not start: {err_path.read_text()[-800:]}")
        wait_until(
            lambda: all(v >= 1 for v in _frames_judged(base, names).values()) or not alive(),
            "every camera's first part",
            120,
        )
        fig.rss_start_mb = fig.rss_peak_mb = rss_mb(proc.pid)
        _log(f"station up (pid {proc.pid}, RSS {fig.rss_start_mb:.0f} MB); faults begin")
        end = time.monotonic() + args.minutes * 60
        n = 0
        while time.monotonic() + args.fault_every <= end:
            _sleep(args.fault_every - args.outage, alive)
            kind = FAULTS[n % len(FAULTS)]
            _inject(kind, n // len(FAULTS), args.outage, broker, plc, cams, alive)
            fig.faults[kind] += 1
            fig.rss_peak_mb = max(fig.rss_peak_mb, rss_mb(proc.pid))
            n += 1
        _sleep(max(0.0, end - time.monotonic()), alive)
        fig.rss_end_mb = rss_mb(proc.pid)
        fig.rss_peak_mb = max(fig.rss_peak_mb, fig.rss_end_mb)
        _log("time is up: cameras stop, queues drain")
        for cam in cams:
            cam.stop()

        def all_stale() -> bool:
            return set(json.loads(http_get(base + "/healthz")[1])["stale"]) == set(names)

        wait_until(lambda: all_stale() or not alive(), "every camera to go quiet", 60)
        wait_until(
            lambda: queues_drained(base, ("mqtt", "modbus")) or not alive(),
            "every queue drained",
            DRAIN_S,
        )
        fig.opcua_match = _opcua_match(work, names, opcua) if alive() else None
        # The broker PUBACKs the station before it forwards a verdict to the subscriber: give
        # the last ones a moment to arrive (bounded; what never arrives is counted as lost).
        with suppress(TimeoutError):
            wait_until(lambda: _all_at_subscriber(work, names, plant), "the subscriber", 30)
    except (RuntimeError, TimeoutError) as e:
        tail = " | ".join(err_lines()[-5:])
        raise RuntimeError(f"{e} (station stderr, last lines: {tail})") from None
    finally:
        if alive():
            proc.send_signal(signal.SIGTERM)
        try:
            fig.exit_code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            fig.exit_code = proc.wait()
        fig.seconds = time.monotonic() - t0
        plant.close()
        for cam in cams:
            cam.stop()
        plc.close()
        broker.kill()
    _compare(fig, work, names, plant, plc)
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return fig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge_runtime.soak",
        description="Soak a station against a local broker and PLC with faults injected.",
    )
    p.add_argument("--cameras", type=int, default=3, help="live MJPEG cameras (default 3)")
    p.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    p.add_argument(
        "--model", type=Path, default=Path("models/default"),
        help="model directory (default models/default, made by `make export`)",
    )  # fmt: skip
    p.add_argument("--fps", type=float, default=10.0, help="each camera's frame rate (default 10)")
    p.add_argument(
        "--fault-every", type=float, default=30.0, metavar="S",
        help="a fault every S seconds, in turn broker, PLC, camera (default 30)",
    )  # fmt: skip
    p.add_argument(
        "--outage", type=float, default=5.0, metavar="S", help="each fault lasts S (default 5)"
    )
    p.add_argument(
        "--deadline-ms", type=float, default=250.0, metavar="MS",
        help="every camera's deadline; later verdicts are counted late (default 250)",
    )  # fmt: skip
    p.add_argument(
        "--markdown", type=Path, nargs="?", const=Path("BENCHMARKS.md"), metavar="FILE",
        help="write the figures into FILE's soak section (default BENCHMARKS.md)",
    )  # fmt: skip
    p.add_argument("--work", type=Path, help="keep everything in this folder (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        _check(args)
        fig = soak(args)
    except TwinspectError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        return e.exit_code
    except (RuntimeError, TimeoutError) as e:
        print(f"soak: failed: {e}", file=sys.stderr)
        return 1
    print(fig.text(), flush=True)
    if args.markdown is not None:
        command = "python -m edge_runtime.soak " + " ".join(argv) if argv else "make soak"
        write_section(args.markdown, fig.markdown(command.strip()))
        print(f"soak: figures written to {args.markdown}", flush=True)
    return 0 if fig.ok else 1


if __name__ == "__main__":
    sys.exit(main())
