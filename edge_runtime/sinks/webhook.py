"""HTTP webhook sink (stdlib urllib): each verdict POSTed as JSON, through the durable queue.

    open_sink({"url": "https://mes.example/twinspect/verdicts", "token_env": "MES_TOKEN"})

The body is the MQTT verdict payload (`schemas/verdict.schema.json`), one part per request, in
order; a record leaves the queue when the endpoint answered 2xx. Anything else (a refusal, a
timeout, a 5xx) is retried with backoff, so an endpoint that keeps refusing holds the queue:
`last_error` says why. The URL's query belongs to the endpoint, so options come from the config
mapping only: camera, token_file / token_env (sent as `Authorization: Bearer …`), ca (a CA file
for https), timeout (seconds, default 5), and the queue's (max_records, when_full, fsync).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

from edge_runtime.errors import BadInput
from edge_runtime.sinks.base import (
    DEFAULT_CAMERA,
    QueuedSink,
    parse_target,
    queue_file,
    verdict_payload,
)
from edge_runtime.sinks.queue import Entry

BUDGET_S = 1.0  # stop starting new requests after this long in one attempt (bounds close())


class WebhookSink(QueuedSink):
    kind = "webhook"

    def __init__(
        self, target: str | dict, queue_dir: str | None = None, camera: str | None = None
    ) -> None:
        parts, opts = parse_target(target, query_options=False)
        if not parts.hostname:
            raise BadInput(f"{opts.where}: no host in the webhook URL")
        self.url = parts.geturl()
        self.camera = opts.text("camera", camera) or DEFAULT_CAMERA
        token = opts.secret("token")
        ca = opts.path("ca")
        self._timeout = opts.number("timeout", 5.0, 0.1, 300.0)
        self._headers = {"Content-Type": "application/json", "User-Agent": "twinspect"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        try:
            self._ssl = ssl.create_default_context(cafile=str(ca)) if ca else None
        except (ssl.SSLError, OSError) as e:
            raise BadInput(f"{opts.where}: ca={ca} not usable ({e})") from None
        where = opts.where  # the URL without its query, which may hold a key
        super().__init__(where, queue_file(queue_dir, where, "webhook", where, self.camera), opts)
        self._start()

    def _post(self, entry: Entry) -> None:
        body = json.dumps(verdict_payload(entry, self.camera), separators=(",", ":")).encode()
        req = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self._timeout, context=self._ssl) as r:
                r.read()
        except urllib.error.HTTPError as e:
            raise ConnectionError(f"{self.target} answered HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConnectionError(f"{self.target}: {reason}") from None

    def _deliver(self, entries: list[Entry]) -> int:
        start, n = time.monotonic(), 0
        for e in entries:
            try:
                self._post(e)
            except ConnectionError:
                if n:
                    break  # keep what was delivered; the next attempt reports the failure
                raise
            n += 1
            if time.monotonic() - start > BUDGET_S:
                break
        return n
