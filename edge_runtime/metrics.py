"""`/metrics` (Prometheus) and `/healthz` for a run: is every camera delivering, and how.

prometheus_client is an optional extra (`line`) imported only here and only when metrics are
asked for, so the base edge install still runs `twinspect run`; asking for metrics without it is
one line naming the extra, before the model is loaded.

A dedicated CollectorRegistry (not the library's global one) holds only this run's series, so a
library caller running twice, or a test, never meets "Duplicated timeseries". Counters and
histograms are updated by the inference loop as each record is written; what is a state rather
than an event — a camera up or not, its score drift, its sinks' queues — is computed when
Prometheus scrapes, from the same objects /healthz reads, so the two never disagree.

One small stdlib HTTP server serves both paths (prometheus_client's own server has no /healthz),
on a daemon thread: it holds no camera and no file, so nothing is lost when it is torn down.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.sinks_hook import sink_label, sink_stats

if TYPE_CHECKING:
    from edge_runtime.camera import Camera
    from edge_runtime.inspector import Judgement

STAGES = ("preprocess", "embed", "score", "total")
# Per-stage latency: tens of µs on the line PC, up to a slow disk or a busy core.
STAGE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.25, 1.0)
# Capture → decision: includes the wait for the inference loop, so it reaches deadlines (ms).
DECISION_BUCKETS = (1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
DRIFT_WINDOW = 200  # OK scores in the rolling median
# Where a sidecar may keep the median score of good validation parts; none does yet (schema 2).
MEDIAN_KEYS = ("median_good_score", "good_median", "median_good")


def require_prometheus(what: str) -> None:
    """One line naming the extra (exit 2) when prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MissingExtra(what, "line") from None


def drift_scale(sidecar) -> tuple[float, str]:
    """(scale, what it is): the calibration's median good score when the sidecar stores one,
    else the threshold (a drifting good population moves towards it either way)."""
    th = sidecar.threshold
    for block in (th.validation, th.calibration):
        for key in MEDIAN_KEYS:
            v = block.get(key) if isinstance(block, dict) else None
            if isinstance(v, int | float) and v > 0:
                return float(v), "median_good"
    return float(th.value), "threshold"


class CameraMetrics:
    """One camera's series; `frame`/`outage` are called by Camera as records are written."""

    def __init__(self, fam: _Families, cam: Camera) -> None:
        name = cam.name
        self.cam = cam
        self._frames = fam.frames.labels(name)
        self._verdicts = {v: fam.verdicts.labels(name, v) for v in ("OK", "NG", "NOVEL", "ERROR")}
        self._late = fam.late.labels(name)
        self._outages = fam.outages.labels(name)
        self._stage = {s: fam.stage.labels(name, s) for s in STAGES}
        self._decision = fam.decision.labels(name)
        self.scale, self.scale_from = drift_scale(cam.inspector.model.sidecar)
        self._ok_scores: deque[float] = deque(maxlen=DRIFT_WINDOW)
        self._lock = threading.Lock()  # the scrape thread reads the window

    def frame(self, rec: dict, j: Judgement) -> None:
        self._frames.inc()
        self._verdicts[rec["verdict"]].inc()
        if rec.get("late"):
            self._late.inc()
        self._decision.observe(max(0.0, rec["decision_ms"] / 1000.0))
        if j.score is None:
            return
        for stage, ns in zip(STAGES, (j.pre_ns, j.embed_ns, j.score_ns, j.total_ns), strict=True):
            self._stage[stage].observe(ns / 1e9)
        if rec.get("verdict_original", rec["verdict"]) == "OK":  # the model's OK, late or not
            with self._lock:
                self._ok_scores.append(j.score)

    def outage(self) -> None:
        self._outages.inc()

    def drift(self) -> float | None:
        """Rolling median of the last OK scores over the scale; None before the first."""
        with self._lock:
            window = sorted(self._ok_scores)
        if not window or self.scale <= 0:
            return None
        n = len(window)
        median = window[n // 2] if n % 2 else (window[n // 2 - 1] + window[n // 2]) / 2
        return median / self.scale


class _Families:
    """The event series (updated as records are written), all labelled by camera."""

    def __init__(self, registry) -> None:
        from prometheus_client import Counter, Histogram

        r = registry
        self.frames = Counter(
            "twinspect_frames", "Frames judged (one record each), this process", ["camera"],
            registry=r,
        )  # fmt: skip
        self.verdicts = Counter(
            "twinspect_verdicts", "Final verdicts (a late part counts as its fail-safe)",
            ["camera", "verdict"], registry=r,
        )  # fmt: skip
        self.late = Counter(
            "twinspect_late_verdicts",
            "Verdicts decided later than the camera's deadline_ms after capture (replaced by "
            "its fail_safe)", ["camera"], registry=r,
        )  # fmt: skip
        self.outages = Counter(
            "twinspect_outages", "Camera outages recorded", ["camera"], registry=r
        )
        self.stage = Histogram(
            "twinspect_latency_seconds", "Per-stage inspection time of one part",
            ["camera", "stage"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.decision = Histogram(
            "twinspect_capture_to_decision_seconds",
            "From frame capture to its verdict (queueing included): what the deadline measures",
            ["camera"], buckets=DECISION_BUCKETS, registry=r,
        )  # fmt: skip


class _StateCollector:
    """Series computed at scrape time from the cameras' status, drift windows and sinks."""

    def __init__(self, cameras: list[Camera]) -> None:
        self.cameras = cameras

    def describe(self):
        return []  # computed series: nothing to check for collisions at registration

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = time.monotonic()
        up = GaugeMetricFamily(
            "twinspect_camera_up",
            "1 while the camera delivers frames (one within its stale_after_s), else 0 "
            "(stale, failed, or its offline source ended)",
            labels=["camera"],
        )
        age = GaugeMetricFamily(
            "twinspect_camera_last_frame_age_seconds",
            "Seconds since the camera's last recorded frame (since the start before the first)",
            labels=["camera"],
        )
        drift = GaugeMetricFamily(
            "twinspect_score_drift_ratio",
            f"Rolling median of the last {DRIFT_WINDOW} OK scores divided by the calibration's "
            "median good score (scale=median_good) or, when the sidecar stores no median (the "
            "current schema does not), by the threshold (scale=threshold). 1 = as calibrated "
            "for median_good; rising towards 1 for threshold means good parts creep towards NG",
            labels=["camera", "scale"],
        )
        depth = GaugeMetricFamily(
            "twinspect_sink_queue_depth",
            "Records waiting in a sink's durable queue (OUT.sinks/) for the peer",
            labels=["camera", "sink"],
        )
        dropped = CounterMetricFamily(
            "twinspect_sink_dropped",
            "Records a sink dropped because its queue was full (max_records), for the life of "
            "the queue file",
            labels=["camera", "sink"],
        )
        delivered = CounterMetricFamily(
            "twinspect_sink_delivered",
            "Records the peer acknowledged (MQTT PUBACK, Modbus response, HTTP 2xx), for the "
            "life of the queue file",
            labels=["camera", "sink"],
        )
        connected = GaugeMetricFamily(
            "twinspect_sink_connected",
            "1 while the sink reaches its peer (an OPC UA sink: while its server runs), else 0",
            labels=["camera", "sink"],
        )
        for cam in self.cameras:
            st = cam.status
            up.add_metric([cam.name], 0.0 if st.state != "running" or st.stale(now) else 1.0)
            age.add_metric([cam.name], st.age(now))
            m = cam.metrics
            value = m.drift() if m is not None else None
            if value is not None:
                drift.add_metric([cam.name, m.scale_from], value)
            for sink in cam.sinks:
                st, labels = sink_stats(sink), [cam.name, sink_label(sink)]
                for family, value in (
                    (depth, st.depth),
                    (dropped, st.dropped),
                    (delivered, st.delivered),
                    (connected, st.connected),
                ):
                    if value is not None:
                        family.add_metric(labels, value)
        yield from (up, age, drift, depth, dropped, delivered, connected)


def health(cameras: list[Camera]) -> tuple[int, dict]:
    """(HTTP status, body): 200 while no camera is stale or failed, else 503 naming them."""
    now = time.monotonic()
    per = {cam.name: cam.status.to_dict(now) for cam in cameras}
    stale = [cam.name for cam in cameras if cam.status.stale(now)]
    body = {"status": "stale" if stale else "ok", "stale": stale, "cameras": per}
    return (503 if stale else 200), body


class MetricsServer:
    """The HTTP server; `close()` stops it (safe to call twice)."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None


def serve(cameras: list[Camera], host: str, port: int, log=None) -> MetricsServer:
    """Attach metrics to each camera and serve /metrics and /healthz on host:port (0: any
    free port). Says where on stderr, with the port actually bound. BadInput when the address
    cannot be used (in use, not this machine's)."""
    require_prometheus("metrics")
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    families = _Families(registry)
    for cam in cameras:
        cam.metrics = CameraMetrics(families, cam)
    registry.register(_StateCollector(cameras))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                code, ctype, data = 200, CONTENT_TYPE_LATEST, generate_latest(registry)
            elif path == "/healthz":
                code, body = health(cameras)
                ctype, data = "application/json", (json.dumps(body) + "\n").encode()
            else:
                code, ctype, data = 404, "text/plain", b"/metrics or /healthz\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args) -> None:  # one line per scrape would drown the log
            pass

    try:
        httpd = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise BadInput(
            f"metrics on {host}:{port}: cannot listen ({e.strerror or e}); choose another "
            "--metrics-port / [metrics] port"
        ) from None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="twinspect-metrics", daemon=True)
    thread.start()
    server = MetricsServer(httpd, thread)
    print(
        f"twinspect run: metrics on http://{server.host}:{server.port}/metrics, "
        f"health on http://{server.host}:{server.port}/healthz",
        file=log or sys.stderr,
        flush=True,
    )
    return server
