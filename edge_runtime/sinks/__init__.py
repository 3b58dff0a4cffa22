"""Sinks: verdicts passed on to the plant without ever blocking inspection or losing a record.

    from edge_runtime.sinks import open_sink
    sink = open_sink("mqtt://broker:1883/line1?camera=cam1", queue_dir="state/queues")
    sink.submit(record)          # a record as `twinspect run` writes it; never waits for the peer
    sink.stats()                 # depth, delivered, dropped, connected, last_error, …
    sink.close(timeout=5.0)      # deliver what it can, then stop; the rest stays on disk

mqtt:// and mqtts:// (mqtt.py), modbus:// (modbus.py) and http(s):// webhooks (webhook.py) go
through a durable on-disk queue (queue.py), one per sink, in `queue_dir`; opcua:// (opcua.py)
serves the latest state. The protocol libraries are imported only when a sink is opened, so the
base install (without the `line` extra) runs, and opening a sink there says which extra to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge_runtime.errors import BadInput
from edge_runtime.sinks.base import Sink
from edge_runtime.sinks.modbus import ModbusSink
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.sinks.opcua import OpcUaSink
from edge_runtime.sinks.webhook import WebhookSink

SCHEMES: dict[str, type[Sink]] = {
    "mqtt": MqttSink,
    "mqtts": MqttSink,
    "modbus": ModbusSink,
    "opcua": OpcUaSink,
    "http": WebhookSink,
    "https": WebhookSink,
}
SCHEMAS = Path(__file__).parent / "schemas"

__all__ = ["SCHEMAS", "SCHEMES", "Sink", "open_sink"]


def open_sink(
    target: str | Mapping[str, Any],
    queue_dir: str | Path | None = None,
    camera: str | None = None,
) -> Sink:
    """A sink for a URL, or a mapping {"url": …, "queue_dir": …, option: value, …}.

    `queue_dir` holds the queue files of queued sinks (one file per sink, named after its
    target); `camera` is the default camera name for records that carry none.
    """
    if isinstance(target, Mapping):
        target = dict(target)
        queue_dir = target.pop("queue_dir", queue_dir)
        url = target.get("url")
        if not isinstance(url, str) or not url:
            raise BadInput(f"sink config with keys {sorted(target)}: needs a 'url'")
    else:
        url = target
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    cls = SCHEMES.get(scheme.lower())
    if cls is None:
        shown = f"{scheme}://…" if scheme else repr(url)[:60]
        raise BadInput(
            f"sink {shown}: unknown kind; expected " + ", ".join(f"{s}://" for s in SCHEMES)
        )
    return cls(target, queue_dir=None if queue_dir is None else str(queue_dir), camera=camera)
