"""Where a camera's records go besides its results file: MQTT, Modbus, OPC UA (the sinks).

The sinks themselves are another package (`edge_runtime/sinks/`, its own extra): `open_sink(url)`
returns an object with `submit(record)` (never blocks the line: it queues), `close(timeout)` and
`stats()` (a mapping; this side reads `queue_depth` — or `queued` — and `dropped` from it for
/metrics). This module is the only place the run touches it, so the run works the same whether
that package is installed or not: URLs are checked here either way (a typo is one line, exit 2,
before any camera opens), and without the package a camera with sinks says so once on stderr and
records to its results file only — records are never held back waiting for a sink.
"""

from __future__ import annotations

import sys
from contextlib import suppress
from urllib.parse import urlsplit

from edge_runtime.errors import BadInput, MissingExtra

SINK_SCHEMES = ("mqtt", "mqtts", "modbus", "opcua")
SINKS_PACKAGE = "edge_runtime.sinks"


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


def sinks_for(camera) -> list:
    """Open the sinks a camera's config names (its `sinks` URLs); [] when it names none or the
    sinks package is not installed. `camera` is a RunConfig (or anything with .sinks and
    .camera). A sink that cannot be opened raises the package's own error; sinks already
    opened for this camera are closed first, so nothing is left connected."""
    urls = list(getattr(camera, "sinks", ()) or ())
    if not urls:
        return []
    for url in urls:
        try:
            check_sink_url(url)
        except ValueError as e:
            raise BadInput(f"{camera.camera}: sink {e}") from None
    try:
        from edge_runtime.sinks import open_sink
    except ModuleNotFoundError as e:
        if e.name != SINKS_PACKAGE:  # the package is there, a library it needs is not
            raise MissingExtra(f"sinks ({e.name} is not installed)", "line") from None
        _say_no_sinks(camera.camera, urls, f"this install has no {SINKS_PACKAGE}")
        return []
    except ImportError:  # the package is there but has no open_sink (yet)
        _say_no_sinks(camera.camera, urls, f"{SINKS_PACKAGE} has no open_sink")
        return []
    opened: list = []
    try:
        for url in urls:
            opened.append(open_sink(url))
    except BaseException:
        for sink in opened:
            with suppress(Exception):  # closing on the way out of a failure: the first error wins
                sink.close(1.0)
        raise
    return opened


def _say_no_sinks(camera: str, urls: list[str], why: str) -> None:
    print(
        f"twinspect run: {camera}: warning: sinks {', '.join(urls)} are configured but {why}; "
        "records go to the results file only",
        file=sys.stderr,
        flush=True,
    )


def sink_stats(sink) -> tuple[float | None, float | None]:
    """(queue depth, dropped) from a sink's stats(), None where it does not say."""
    try:
        st = sink.stats()
    except Exception:  # a metrics scrape must not fail because a sink misbehaves
        return None, None
    if not isinstance(st, dict):
        return None, None
    depth = st.get("queue_depth", st.get("queued"))
    dropped = st.get("dropped")
    num = (int, float)
    return (
        float(depth) if isinstance(depth, num) else None,
        float(dropped) if isinstance(dropped, num) else None,
    )
