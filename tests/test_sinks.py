"""Sinks against real peers: a Mosquitto broker started here, pymodbus's own TCP server as the
PLC, asyncua's client against our OPC UA server, a stdlib HTTP server for webhooks.

Nothing is mocked and nothing is timed: waits are bounded waits for a condition. The broker is
Debian's `mosquitto` (`make deps` installs it, and CI runs that): without it the MQTT tests skip,
except under CI, where they fail.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest
from helpers_line import (
    REPO,
    Subscriber,
    Webhook,
    expected_registers,
    first_arrivals,
    free_port,
    wait_for,
)
from helpers_line import read_opcua as read

from edge_runtime.errors import BadInput
from edge_runtime.inspector import Judgement
from edge_runtime.records import frame_record
from edge_runtime.sinks import SCHEMAS, open_sink
from edge_runtime.sinks.modbus import sequence_value
from edge_runtime.sinks.queue import DurableQueue
from edge_runtime.sources import Frame

VERDICT_SCHEMA = json.loads((SCHEMAS / "verdict.schema.json").read_text())
STATUS_SCHEMA = json.loads((SCHEMAS / "status.schema.json").read_text())


# ------------------------------------------------------------------------------------ helpers
def part(i: int, verdict: str | None = None, **extra) -> dict:
    """The record `twinspect run` writes for frame i (the real frame_record), with a part id."""
    verdict = verdict or ("OK", "OK", "NG", "OK", "ERROR")[i % 5]
    score = None if verdict == "ERROR" else 0.01 * (i % 97)
    j = Judgement(verdict, score, None if score is None else score / 2, None, 1000)
    rec = frame_record(Frame(i, "cam", None, 1.7e9 + i, float(i)), j, 0.5, "sidecar")
    return {**rec, "part_id": 5000 + i, "camera": "cam1", **extra}


# --------------------------------------------------------------------------------- the queue
def test_queue_is_in_order_and_survives_a_restart(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite")
    for i in range(10):
        q.put(part(i))
    assert [e.record["frame"] for e in q.peek(3)] == [0, 1, 2]
    assert q.ack(q.peek(3)[-1].seq) == 3
    q.close()
    q = DurableQueue(tmp_path / "q.sqlite")  # as after a restart
    assert (q.depth, q.delivered) == (7, 3)
    entries = q.peek(100)
    assert [e.record["frame"] for e in entries] == list(range(3, 10))
    assert entries[0].record == part(3)
    assert q.put(part(10)) == 11  # sequence numbers go on growing
    q.close()


def test_queue_full_drops_the_oldest_and_counts_them(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite", max_records=5)
    for i in range(8):
        q.put(part(i))
    assert (q.depth, q.dropped) == (5, 3)
    assert [e.record["frame"] for e in q.peek(10)] == [3, 4, 5, 6, 7]
    q.close()
    assert DurableQueue(tmp_path / "q.sqlite", max_records=5).dropped == 3  # a kept metric

    r = DurableQueue(tmp_path / "r.sqlite", max_records=5, when_full="refuse-newest")
    assert [r.put(part(i)) for i in range(7)][5:] == [None, None]
    assert (r.depth, r.refused, r.dropped) == (5, 2, 0)
    assert [e.record["frame"] for e in r.peek(10)] == [0, 1, 2, 3, 4]


def test_queue_log_is_folded_back_by_the_sender_thread_not_by_put(tmp_path, monkeypatch):
    """sqlite's own checkpoint (a disk flush) would run inside whichever commit crosses ~1,000
    log pages — the inspection loop's put. The queue turns it off and the sender thread folds
    the log back instead; past WAL_LIMIT it also cuts the log (0 here: at once)."""
    from edge_runtime.sinks import queue as queue_module
    from edge_runtime.sinks.queue import Forwarder

    monkeypatch.setattr(queue_module, "WAL_LIMIT", 0)
    monkeypatch.setattr(queue_module, "CHECKPOINT_S", 0.0)
    q = DurableQueue(tmp_path / "q.sqlite")
    assert q._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    for i in range(20):
        q.put(part(i))
    wal = tmp_path / "q.sqlite-wal"
    assert wal.stat().st_size > 0 and q.checkpoints == 0  # put never folds the log back
    sender = Forwarder(q, len, "test")
    sender.start()
    wait_for("the sender to fold the log back and cut it", lambda: q.depth == 0 and q.checkpoints)
    wait_for("the log cut", lambda: wal.stat().st_size == 0)
    sender.stop(1.0)
    q.close()
    assert DurableQueue(tmp_path / "q.sqlite").delivered == 20


def test_queue_has_one_sender(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite")
    with pytest.raises(BadInput, match="in use by another process"):
        DurableQueue(tmp_path / "q.sqlite")
    q.close()


def test_close_with_the_peer_down_keeps_the_records_on_disk(tmp_path):
    sink = open_sink(f"modbus://127.0.0.1:{free_port()}?heartbeat_s=0", queue_dir=tmp_path)
    for i in range(5):
        sink.submit(part(i))
    sink.close(timeout=0.1)  # nobody listens: nothing can be delivered
    (path,) = tmp_path.glob("*.sqlite")
    q = DurableQueue(path)
    assert [e.record for e in q.peek(10)] == [part(i) for i in range(5)]
    q.close()


# ---------------------------------------------------------------------------------- factory
@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("mqtt://broker/line?password=hunter2", "password in plain text is refused"),
        ("mqtt://user:hunter2@broker/line", "a password in the URL is refused"),
        ("mqtt://broker/line?password_env=TWINSPECT_NOT_SET", "TWINSPECT_NOT_SET is not set"),
        ("mqtt://broker/line?colour=red", "unknown option(s) colour"),
        ("mqtt://broker/line?camera=a/b", "camera 'a/b' cannot be part of an MQTT topic"),
        ("mqtt://broker/line?ca=/nonexistent/ca.pem", "ca=/nonexistent/ca.pem: no such file"),
        ("mqtts://broker/line?ca=" + __file__, "ca, cert or key not usable"),
        ({"url": "https://mes/v", "ca": __file__}, "not usable"),
        ("modbus://plc?device_id=300", "device_id='300' is out of range"),
        ("modbus://plc?handshake=maybe", "expected true or false"),
        ("ftp://files/verdicts", "unknown kind"),
        ({"camera": "cam1"}, "needs a 'url'"),
    ],
)
def test_bad_sink_configuration_is_one_line_naming_it(tmp_path, target, problem):
    with pytest.raises(BadInput) as e:
        open_sink(target, queue_dir=tmp_path).close()
    assert problem in str(e.value) and "\n" not in str(e.value)
    assert "hunter2" not in str(e.value)


def test_queued_sinks_need_a_queue_folder():
    with pytest.raises(BadInput, match="needs a queue folder"):
        open_sink("mqtt://127.0.0.1:1/line")


BLOCKED = """
import sys
class NoLineExtra:  # the base install: the protocol libraries are not there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("paho", "pymodbus", "asyncua"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoLineExtra())
from edge_runtime.errors import MissingExtra
from edge_runtime.sinks import open_sink
for url in ("mqtt://h/line", "modbus://plc", "opcua://127.0.0.1:4840"):
    try:
        open_sink(url, queue_dir=sys.argv[1])
    except MissingExtra as e:
        print(e.exit_code, e)
"""


def test_without_the_line_extra_a_sink_names_the_extra(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(tmp_path / "q")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.splitlines()
    assert out == [
        "2 the MQTT sink (paho-mqtt) needs the 'line' extra: pip install 'twinspect[line]'",
        "2 the Modbus sink (pymodbus) needs the 'line' extra: pip install 'twinspect[line]'",
        "2 the OPC UA sink (asyncua) needs the 'line' extra: pip install 'twinspect[line]'",
    ]
    assert not (tmp_path / "q").exists()  # refused before anything was created
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, edge_runtime.sinks; print(json.dumps([*sys.modules]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert not {"paho", "pymodbus", "asyncua"} & {m.split(".")[0] for m in json.loads(loaded)}


# -------------------------------------------------------------------------------------- MQTT
def test_mqtt_every_record_arrives_once_in_order_and_matches_the_schema(broker, tmp_path):
    plant = Subscriber(broker.port)
    sink = open_sink(f"mqtt://127.0.0.1:{broker.port}/line?camera=cam1", queue_dir=tmp_path)
    records = [part(i) for i in range(200)]
    for rec in records:
        sink.submit(rec)
    sink.submit({"event": "outage", "source": "cam", "recovered": True})  # not a verdict
    wait_for("200 verdicts at the subscriber", lambda: len(plant.seqs()) >= 200)
    sink.close()
    wait_for(
        "the goodbye",
        lambda: plant.payloads("status")[-1:] == [{"camera": "cam1", "status": "offline"}],
    )
    plant.close()

    got = plant.payloads("verdict")
    assert [p["seq"] for p in got] == list(range(1, 201))  # exactly once, in order
    for p, rec in zip(got, records, strict=True):
        jsonschema.validate(p, VERDICT_SCHEMA)
        assert (p["verdict"], p["part_id"], p["frame"]) == (
            rec["verdict"],
            rec["part_id"],
            i := rec["frame"],
        )
        assert p["score"] == rec["score"] and p["camera"] == "cam1", i
    statuses = plant.payloads("status")
    for p in statuses:
        jsonschema.validate(p, STATUS_SCHEMA)
    assert statuses[0]["status"] == "online"
    st = sink.stats()
    assert (st["delivered"], st["depth"], st["dropped"], st["skipped"]) == (200, 0, 0, 1)


def test_mqtt_broker_killed_mid_stream_loses_nothing(broker, tmp_path):
    plant = Subscriber(broker.port)
    sink = open_sink(f"mqtt://127.0.0.1:{broker.port}/line", queue_dir=tmp_path)
    n, submitted = 300, []

    def line() -> None:  # a line making a part every 3 ms, whatever the broker does
        for i in range(n):
            sink.submit(part(i))
            submitted.append(i)
            time.sleep(0.003)

    producer = threading.Thread(target=line)
    producer.start()
    wait_for("the stream to start", lambda: len(plant.seqs()) >= 50)
    broker.kill()  # mid-stream: messages in flight, PUBACKs lost
    wait_for("the sink to see the broker gone", lambda: not sink.stats()["connected"])
    wait_for("parts made during the outage", lambda: len(submitted) >= 200)
    assert sink.stats()["depth"] > 0  # held on disk, not lost
    broker.start()
    producer.join()
    wait_for("every verdict after the outage", lambda: set(plant.seqs()) >= set(range(1, n + 1)))
    sink.close()
    plant.close()

    seqs = plant.seqs()
    assert first_arrivals(seqs) == list(range(1, n + 1))  # nothing lost, in order
    by_seq = {p["seq"]: p for p in plant.payloads("verdict")}
    assert [by_seq[s]["part_id"] for s in range(1, n + 1)] == [5000 + i for i in range(n)]
    st = sink.stats()
    assert (st["delivered"], st["depth"], st["dropped"]) == (n, 0, 0)
    assert st["disconnects"] >= 1 and st["last_error"]  # the outage is on the record


KEEP_RUNNING = """
import sys, time
from edge_runtime.sinks import open_sink
sink = open_sink(sys.argv[1], queue_dir=sys.argv[2])
for i in range(int(sys.argv[3])):
    sink.submit({"event": "frame", "frame": i, "verdict": "NG", "score": 0.7, "part_id": i})
while sys.argv[3] == "0" and not sink.stats()["connected"]:
    time.sleep(0.02)
print("ready", sink.stats()["depth"], flush=True)
time.sleep(600)
"""


def run_killed(url: str, queue_dir: Path, parts: int) -> str:
    """Start a station process, wait for its 'ready' line, and kill -9 it; its line."""
    child = subprocess.Popen(
        [sys.executable, "-c", KEEP_RUNNING, url, str(queue_dir), str(parts)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return line


def test_mqtt_last_will_says_offline_when_the_station_is_killed(broker, tmp_path):
    plant = Subscriber(broker.port)
    url = f"mqtt://127.0.0.1:{broker.port}/line?camera=cam7"
    assert run_killed(url, tmp_path, 0) == "ready 0"
    wait_for(
        "the last will",
        lambda: [p["status"] for p in plant.payloads("status")] == ["online", "offline"],
    )
    plant.close()
    late = Subscriber(broker.port, client_id="late-comer")  # retained: a newcomer learns it too
    wait_for(
        "the retained status",
        lambda: late.payloads("status") == [{"camera": "cam7", "status": "offline"}],
    )
    late.close()


def test_mqtt_records_of_a_killed_station_are_delivered_after_its_restart(broker, tmp_path):
    broker.kill()  # the plant's broker is down while the station judges 20 parts
    url = f"mqtt://127.0.0.1:{broker.port}/line?camera=cam1"
    assert run_killed(url, tmp_path, 20) == "ready 20"
    broker.start()
    plant = Subscriber(broker.port)
    sink = open_sink(url, queue_dir=tmp_path)  # the station again, after its restart
    wait_for("the 20 verdicts kept on disk", lambda: len(plant.seqs()) >= 20)
    sink.close()
    plant.close()
    assert plant.seqs() == list(range(1, 21))
    assert [p["part_id"] for p in plant.payloads("verdict")] == list(range(20))


# ------------------------------------------------------------------------------------ Modbus
def test_modbus_registers_follow_the_map_and_the_sequence_is_written_last(plc, tmp_path):
    records = [part(i, part_id=70_000 * i) for i in range(12)]
    records[3]["score"] = 123.45678  # 1234568 needs the high word
    url = f"modbus://127.0.0.1:{plc.port}?device_id=3&heartbeat_s=0.05"
    sink = open_sink(url, queue_dir=tmp_path)
    for rec in records:
        sink.submit(rec)
    wait_for("12 parts written", lambda: sink.stats()["delivered"] == 12)
    wait_for("the heartbeat to beat", lambda: sink.stats()["heartbeat"] >= 3)
    sink.close()

    assert plc.parts() == [expected_registers(i + 1, r) for i, r in enumerate(records)]
    part_writes = [(fc, addr, len(v)) for fc, addr, v in plc.writes if (fc, addr) != (6, 6)]
    assert part_writes == [(16, 0, 5), (15, 0, 3), (6, 5, 1)] * 12  # data, coils, sequence
    coils = [v for fc, _, v in plc.writes if fc == 15]
    assert coils == [[r["verdict"] == v for v in ("OK", "NG", "ERROR")] for r in records]
    beats = [v[0] for fc, addr, v in plc.writes if (fc, addr) == (6, 6)]
    assert beats[:3] == [1, 2, 3]
    assert plc.registers()[:6] == expected_registers(12, records[-1])
    assert plc.coils() == [records[-1]["verdict"] == v for v in ("OK", "NG", "ERROR")]


def test_modbus_plc_restarted_mid_run_loses_nothing(plc, tmp_path):
    sink = open_sink(f"modbus://127.0.0.1:{plc.port}?device_id=3", queue_dir=tmp_path)
    records = [part(i) for i in range(40)]
    for rec in records[:15]:
        sink.submit(rec)
    wait_for("the first 15 parts", lambda: sink.stats()["delivered"] == 15)
    plc.stop()  # the PLC goes down; the line does not stop
    for rec in records[15:30]:
        sink.submit(rec)
    wait_for("the sink to see the PLC gone", lambda: not sink.stats()["connected"])
    assert sink.stats()["depth"] > 0
    plc.start()  # back, with its memory cleared
    for rec in records[30:]:
        sink.submit(rec)
    wait_for("every part after the restart", lambda: sink.stats()["delivered"] == 40)
    st = sink.stats()
    sink.close()

    seen = first_arrivals([regs[5] for regs in plc.parts()])
    assert seen == [sequence_value(i) for i in range(1, 41)]  # every part, in order
    assert plc.registers()[:6] == expected_registers(40, records[-1])
    assert (st["depth"], st["dropped"], st["errors"] >= 1) == (0, 0, True)
    assert "PLC" in st["last_error"] or "connect" in st["last_error"]


def test_modbus_handshake_lets_a_slow_plc_see_every_part(plc, tmp_path):
    from pymodbus.client import ModbusTcpClient

    seen: list[list[int]] = []
    done = threading.Event()

    def plc_program() -> None:  # scans the sequence, takes the part, acknowledges it
        c = ModbusTcpClient("127.0.0.1", port=plc.port)
        c.connect()
        last = 0
        while not done.is_set():
            regs = c.read_holding_registers(0, count=6, device_id=3).registers
            if regs[5] != last:
                seen.append(regs)
                last = regs[5]
                c.write_register(7, last, device_id=3)
            time.sleep(0.005)
        c.close()

    program = threading.Thread(target=plc_program)
    program.start()
    url = f"modbus://127.0.0.1:{plc.port}?device_id=3&handshake=true&heartbeat_s=0"
    sink = open_sink(url, queue_dir=tmp_path)
    records = [part(i) for i in range(25)]
    for rec in records:  # faster than the PLC scans
        sink.submit(rec)
    wait_for("the PLC to take 25 parts", lambda: len(seen) >= 25)
    sink.close()
    done.set()
    program.join()
    assert seen == [expected_registers(i + 1, r) for i, r in enumerate(records)]


# ------------------------------------------------------------------------------------ OPC UA
def test_opcua_client_reads_the_latest_state_and_counters(tmp_path):
    port = free_port()
    sink = open_sink(f"opcua://127.0.0.1:{port}?cameras=cam1,cam2")
    url = f"opc.tcp://127.0.0.1:{port}/"
    try:
        first = read(url)
        assert first["Status"] == "starting" and first["CountOK"] == 0
        assert first["LastVerdict"] == "" and first["LastScore"] != first["LastScore"]  # NaN
        for rec in (part(0, "OK"), part(1, "NG"), part(2, "NG", late=True), part(3, "ERROR")):
            sink.submit(rec)
        sink.submit(part(4, "OK", camera="cam9"))  # a camera nobody announced
        want = {"CountOK": 1, "CountNG": 2, "CountERROR": 1, "CountLate": 1}
        wait_for("the counters on the server", lambda: {k: read(url)[k] for k in want} == want)
        now = read(url)
        assert (now["LastVerdict"], now["LastPartId"], now["Status"]) == (
            "ERROR",
            "5003",
            "running",
        )
        assert now["LastScore"] != now["LastScore"]  # ERROR has no score: NaN
        cam9 = read(url, "cam9")
        assert (cam9["LastVerdict"], cam9["CountOK"], cam9["LastScore"]) == ("OK", 1, 0.04)
        assert read(url, "cam2")["Status"] == "starting"
        with pytest.raises(BadInput, match="cannot start the OPC UA server"):
            open_sink(f"opcua://127.0.0.1:{port}")  # the port is taken: one line, no traceback
    finally:
        sink.close()
    assert sink.stats()["counts"]["cam1"]["CountNG"] == 2


def make_cert(folder: Path, name: str, uri: str, server: bool) -> tuple[Path, Path]:
    """A self-signed application certificate (DER) and key (PEM), made with asyncua's helpers."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    use = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    sans = [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, sans, [use])
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


def test_opcua_secured_endpoint_needs_a_trusted_client_certificate(tmp_path):
    from asyncua import ua

    trust = tmp_path / "trust"
    trust.mkdir()
    server_cert, server_key = make_cert(tmp_path, "server", "urn:twinspect:server", True)
    client_cert, client_key = make_cert(tmp_path, "client", "urn:twinspect:test:client", False)
    shutil.copy(client_cert, trust)  # the station trusts this client
    port = free_port()
    sink = open_sink(
        {
            "url": f"opcua://127.0.0.1:{port}",
            "cert": str(server_cert),
            "key": str(server_key),
            "trust": str(trust),
        }
    )
    url = f"opc.tcp://127.0.0.1:{port}/"
    try:
        sink.submit(part(1, "NG"))
        secure = f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}"
        wait_for("NG over the secure channel", lambda: read(url, security=secure)["CountNG"] == 1)
        with pytest.raises(ua.UaError, match="No matching endpoints"):
            read(url)  # no None endpoint: an unsecured client is turned away
        other_cert, other_key = make_cert(tmp_path, "other", "urn:twinspect:test:client", False)
        with pytest.raises(ua.UaStatusCodeError, match="not trusted"):
            read(url, security=f"Basic256Sha256,SignAndEncrypt,{other_cert},{other_key}")
    finally:
        sink.close()


# ----------------------------------------------------------------------------------- webhook
def test_webhook_posts_every_verdict_in_order_through_refusals(tmp_path):
    endpoint = Webhook(refusals=2, token="s3cret")  # briefly unavailable, then 2xx
    got = endpoint.got
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    url = endpoint.url + "?line=1"
    sink = open_sink({"url": url, "token_file": str(token)}, queue_dir=tmp_path / "q")
    try:
        for i in range(30):
            sink.submit(part(i))
        wait_for("30 POSTs", lambda: len(got) >= 30)
        # The endpoint has the 30th before its 204 reaches the sink, which then acknowledges.
        wait_for("30 acknowledged", lambda: sink.stats()["delivered"] == 30)
        st = sink.stats()
    finally:
        sink.close()
        endpoint.close()
    assert [p["seq"] for p in got] == list(range(1, 31))
    for p in got:
        jsonschema.validate(p, VERDICT_SCHEMA)
    assert (st["delivered"], st["errors"] >= 1, "HTTP 503" in st["last_error"]) == (30, True, True)
    assert "s3cret" not in json.dumps(st)
