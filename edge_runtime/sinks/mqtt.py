"""MQTT sink (paho-mqtt 2.x): one message per part, and the camera's status, for the plant.

    mqtt://HOST[:1883]/PREFIX?camera=cam1
    mqtts://HOST[:8883]/PREFIX?ca=/etc/twinspect/ca.pem&username=line1&password_file=/etc/…

Topics:
- `PREFIX/<camera>/verdict`, QoS 1, not retained: one JSON object per part
  (`schemas/verdict.schema.json`): seq, camera, verdict, and the record's part_id, frame, ts,
  score, score_norm, threshold, reason, late when present. The camera is the record's
  `camera`, else this sink's.
- `PREFIX/<camera>/status`, QoS 1, retained (`schemas/status.schema.json`):
  {"camera": …, "status": "online"} published on every (re)connect (birth), "offline" set as
  the connection's last will (the broker publishes it when the station dies or its link drops
  without a goodbye), and published by `close`.

Options: camera (default cam1), client_id (default twinspect-<host name>-<camera>), username
(or user@ in the URL), password_file / password_env (never the password itself), ca (mqtts: the
CA file; default the system's), cert and key (a client certificate), keepalive (seconds,
default 30), and the queue's (max_records, when_full, fsync).

Delivery is at least once, never lost: a record leaves the queue only when the broker's PUBACK
for its message id has come back (on_publish). paho keeps messages not yet acknowledged across
a reconnect and re-sends them (DUP flag); after a process restart the queue re-sends what had
no PUBACK. Either can duplicate a message the broker had received: consumers drop duplicates by
(camera, seq), which only grows.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from typing import Any

from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.sinks.base import (
    DEFAULT_CAMERA,
    QueuedSink,
    parse_target,
    queue_file,
    verdict_payload,
)
from edge_runtime.sinks.queue import Entry

ACK_WAIT_S = 1.0  # one delivery attempt waits this long for PUBACKs (bounds close())


def _topic_part(where: str, name: str, value: str) -> str:
    if not value or any(c in value for c in "+#/\0"):
        raise BadInput(f"{where}: {name} {value!r} cannot be part of an MQTT topic")
    return value


def status_payload(camera: str, status: str) -> bytes:
    return json.dumps({"camera": camera, "status": status}, separators=(",", ":")).encode()


class MqttSink(QueuedSink):
    kind = "mqtt"

    def __init__(
        self, target: str | dict, queue_dir: str | None = None, camera: str | None = None
    ) -> None:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise MissingExtra("the MQTT sink (paho-mqtt)", "line") from None
        parts, opts = parse_target(target)
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise BadInput(f"{opts.where}: the port is not a number") from None
        if not parts.hostname:
            raise BadInput(f"{opts.where}: no broker host (mqtt://HOST:PORT/PREFIX)")
        prefix = parts.path.strip("/")
        if any(c in prefix for c in "+#\0"):
            raise BadInput(f"{opts.where}: topic prefix {prefix!r} holds a wildcard")
        cam = opts.text("camera", camera) or DEFAULT_CAMERA
        self.camera = _topic_part(opts.where, "camera", cam)
        self.prefix = prefix
        self.status_topic = self._topic(self.camera, "status")
        client_id = opts.text("client_id", f"twinspect-{socket.gethostname()}-{self.camera}")
        username = opts.text("username", parts.username)
        password = opts.secret("password")
        ca, cert, key = opts.path("ca"), opts.path("cert"), opts.path("key")
        if not tls and (ca or cert or key):
            raise BadInput(f"{opts.where}: ca, cert and key are for mqtts://")
        if bool(cert) != bool(key):
            raise BadInput(f"{opts.where}: a client certificate needs both cert and key")
        keepalive = opts.integer("keepalive", 30, 5, 3600)
        name = f"{parts.scheme}://{parts.hostname}:{port}/{prefix}"
        path = queue_file(queue_dir, name, "mqtt", parts.hostname, port, prefix, self.camera)

        self._queued_rc = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: sent later
        self._lock = threading.Condition()
        self._acked: set[int] = set()  # message ids the broker acknowledged (on_publish)
        self._inflight: dict[int, int] = {}  # seq → message id, published and not yet acked
        self._down: str | None = "not connected yet"
        self._up = threading.Event()  # set while connected (paho's thread says so)
        self.disconnects = 0  # connections lost (a brief outage need not fail a delivery)
        self.last_down: str | None = None
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,  # our queue holds the backlog, not the broker
        )
        c.will_set(self.status_topic, status_payload(self.camera, "offline"), qos=1, retain=True)
        if username:
            c.username_pw_set(username, password)
        if tls:
            try:
                c.tls_set(
                    ca_certs=str(ca) if ca else None,
                    certfile=str(cert) if cert else None,
                    keyfile=str(key) if key else None,
                )
            except (ssl.SSLError, OSError, ValueError) as e:
                raise BadInput(f"{opts.where}: ca, cert or key not usable ({e})") from None
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c
        super().__init__(name, path, opts)  # the queue: opened once nothing else can fail
        c.connect_async(parts.hostname, port, keepalive)
        c.loop_start()  # paho's network thread: connects, reconnects, re-sends in-flight
        self._start()

    def _topic(self, camera: str, leaf: str) -> str:
        return f"{self.prefix}/{camera}/{leaf}" if self.prefix else f"{camera}/{leaf}"

    # -- paho's thread ---------------------------------------------------------------------
    def _on_connect(self, client: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self._down = f"the broker refused the connection ({reason})"
            return
        self._down = None
        self._up.set()
        client.publish(self.status_topic, status_payload(self.camera, "online"), 1, True)

    def _on_connect_fail(self, _client: Any, _u: Any) -> None:
        self._down = f"cannot reach the broker at {self.target}"

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._up.clear()
        self.disconnects += 1
        self._down = self.last_down = f"disconnected from {self.target} ({reason})"

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _props: Any) -> None:
        # Called under paho's own lock: only note the id, never wait here.
        with self._lock:
            self._acked.add(mid)
            self._lock.notify_all()

    # -- the sender thread -----------------------------------------------------------------
    def _deliver(self, entries: list[Entry]) -> int:
        for seq in [s for s in self._inflight if s < entries[0].seq]:
            del self._inflight[seq]  # dropped from the full queue while in flight
        with self._lock:  # ids acked but not ours (status messages) would collide after a wrap
            self._acked &= set(self._inflight.values())
        if not self._inflight and not self._up.wait(ACK_WAIT_S):
            raise ConnectionError(self._down or "not connected")
        connected = self._client.is_connected()
        if connected:
            for e in entries:
                if e.seq in self._inflight:
                    continue  # paho holds it and re-sends it itself after a reconnect
                payload = verdict_payload(e, self.camera)
                info = self._client.publish(
                    self._topic(payload["camera"], "verdict"),
                    json.dumps(payload, separators=(",", ":")),
                    qos=1,
                )
                if info.rc not in self._queued_rc:
                    raise ConnectionError(f"publish failed (paho rc {info.rc})")
                self._inflight[e.seq] = info.mid
        deadline = time.monotonic() + ACK_WAIT_S
        n = 0
        with self._lock:
            for e in entries:
                mid = self._inflight.get(e.seq)
                if mid is None:
                    break
                if not self._lock.wait_for(
                    lambda m=mid: m in self._acked, max(0.0, deadline - time.monotonic())
                ):
                    break
                self._acked.discard(mid)
                del self._inflight[e.seq]
                n += 1
        if n == 0 and not self._client.is_connected():
            raise ConnectionError(self._down or "not connected")
        return n

    def _connected(self) -> bool:
        return self._client.is_connected()

    def _disconnect(self) -> None:
        """Say "offline" ourselves (a clean disconnect does not fire the last will)."""
        c = self._client
        try:
            if c.is_connected():
                info = c.publish(self.status_topic, status_payload(self.camera, "offline"), 1, True)
                deadline = time.monotonic() + ACK_WAIT_S
                with self._lock:
                    self._lock.wait_for(
                        lambda: info.mid in self._acked, max(0.0, deadline - time.monotonic())
                    )
            c.disconnect()
        finally:
            c.loop_stop()

    def stats(self) -> dict:
        st = super().stats()
        return {
            **st,
            "last_error": st["last_error"] or self.last_down,
            "disconnects": self.disconnects,
            "in_flight": len(self._inflight),
            "camera": self.camera,
        }
