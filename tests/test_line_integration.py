"""Issue 11, the line integration: a station's verdicts reach the plant — MQTT, Modbus TCP,
OPC UA, a webhook — while the broker and the PLC die and come back.

Everything is real: `twinspect run` in a child process with an exported model, a Mosquitto
broker killed with SIGKILL, pymodbus's TCP server as the PLC (stopped and started again, its
memory zeroed), an MJPEG camera over HTTP, paho as the plant's subscriber, asyncua as the SCADA
client. Nothing is timed: every wait is a bounded wait for a condition.

How delivery is checked, per camera:
- MQTT is at least once (QoS 1): after the broker's kill, a verdict it had taken without its
  PUBACK reaching the station is sent again, so the subscriber may see it twice. Consumers drop
  duplicates by (camera, seq) — `seq` only grows — and so does the test; after that every
  part is there exactly once, in order.
- The PLC logs every write it receives. One PLC serves the three cameras, one register block
  each (hr_base 0/8/16, coil_base 0/3/6), as a line PLC would: each block's parts are read as a
  PLC program latching on the sequence register (+5) sees them. A part whose write was cut by
  the PLC's stop is written again whole, with the same sequence value: a repeat, dropped like
  an MQTT duplicate.
- OPC UA shows state, not a queue: its counters must equal the results file's counts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_line import (
    Child,
    MjpegCamera,
    Subscriber,
    Webhook,
    expected_registers,
    first_arrivals,
    frames_of,
    free_port,
    get,
    metrics_url,
    queues_drained,
    read_opcua,
    scrape,
    sink_series,
    small_line,
    wait_for,
    write_station,
)

from edge_runtime.cli import main
from edge_runtime.sinks_hook import QUEUE_SUFFIX

N_FRAMES = 40  # per offline camera, paced at FPS: they are still running through the faults
FPS = 4
ROI = "106,81,108,78"
CAMERAS = ("rec", "folder", "live")
MORE = 3  # parts each camera judges while a peer is down


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    return small_line(tmp_path_factory, N_FRAMES)


@pytest.fixture
def camera(line) -> Iterator[MjpegCamera]:
    cam = MjpegCamera(sorted((line / "recording" / "frames").glob("*.png")), interval_s=0.05)
    cam.start()
    yield cam
    cam.stop()


# ----------------------------------------------------------------------------- reading it
def frames_judged(base: str) -> dict[str, float]:
    m = scrape(base)
    return {c: m.get(("twinspect_frames_total", (("camera", c),)), 0.0) for c in CAMERAS}


def outage(base: str, kind: str, proc, cameras=CAMERAS) -> None:
    """While `kind`'s peer is down: every camera's sink of that kind sees it gone, and every
    camera still judges MORE parts (the line does not wait for the plant)."""
    wait_for(
        f"every {kind} sink to see its peer gone",
        lambda: (
            set(sink_series(scrape(base), "twinspect_sink_connected", kind).items())
            == {(c, 0.0) for c in cameras}
        ),
        proc,
    )
    before = frames_judged(base)
    wait_for(
        f"{MORE} parts per camera with the {kind} peer down",
        lambda: all(n >= before[c] + MORE for c, n in frames_judged(base).items() if c in cameras),
        proc,
    )


def opcua_counts(recs: list[dict]) -> dict[str, int]:
    """The OPC UA counters a camera's results file implies."""
    n = Counter(r["verdict"] for r in recs)
    return {
        "CountOK": n["OK"],
        "CountNG": n["NG"],
        "CountERROR": n["ERROR"],
        "CountLate": sum(r["late"] is True for r in recs),
    }


def plc_parts(plc, block: int) -> list[list[int]]:
    """The parts the PLC received in one camera's register block, repeats dropped."""
    return [list(p) for p in first_arrivals([tuple(p) for p in plc.parts(plc.hr_base(block))])]


# ----------------------------------------------------------------------------- the station
def test_three_cameras_reach_jsonl_broker_and_plc_exactly_once_through_outages(
    tmp_path, untrained_model_dir, line, camera, broker, plc
):
    """Two paced folders of generated frames and a live MJPEG camera, one station with MQTT +
    Modbus (one register block per camera) + OPC UA. The broker is SIGKILLed and restarted, the
    PLC stopped and restarted, each while every camera goes on judging. Then every part of every
    camera is in its JSONL, at the subscriber and in the PLC's registers exactly once (after
    the documented dedupe) and in order; the OPC UA counters equal the JSONL's; nothing is
    late against a generous deadline; and nothing is left in a queue."""
    shutil.copytree(untrained_model_dir, tmp_path / "models" / "default")
    shutil.copytree(line / "recording", tmp_path / "data" / "recording")
    opcua = free_port()
    path = write_station(
        tmp_path,
        f"""
opcua_port = {opcua}

[metrics]
port = 0

[defaults]
model = "models/default"
deadline_ms = 10000        # generous: an idle machine is never this late
mqtt = "{broker.url}/line"
stale_after_s = 1
reconnect_wait_s = 0.05
max_reconnects = 1000

[[cameras]]
name = "rec"
source = "data/recording"
out = "results/rec.jsonl"
fps = {FPS}
modbus = "{plc.address(0)}"

[[cameras]]
name = "folder"
source = "data/recording/frames"
out = "results/folder.jsonl"
roi = "{ROI}"
fps = {FPS}
modbus = "{plc.address(1)}"

[[cameras]]
name = "live"
source = "{camera.url}"
out = "results/live.jsonl"
roi = "{ROI}"
modbus = "{plc.address(2)}"
""",
    )
    plant = Subscriber(broker.port)  # subscribed before the first verdict is published
    child = Child("--config", path)
    proc = child.proc
    try:
        base = wait_for("the metrics address", lambda: metrics_url(child.err), proc)
        wait_for(
            "every camera's first verdicts at the subscriber",
            lambda: all(len(plant.verdicts(c)) >= 2 for c in CAMERAS),
            proc,
        )
        broker.kill()  # SIGKILL: PUBACKs lost, the subscriber's session kept on disk
        outage(base, "mqtt", proc)
        plc.stop()  # both down at once for a while
        outage(base, "modbus", proc)
        held = sink_series(scrape(base), "twinspect_sink_queue_depth", "mqtt")
        assert sum(held.values()) > 0, held  # parts made with the broker down wait on disk
        broker.start()
        plc.start()  # back with its memory zeroed, like a power-cycled PLC

        def done(name: str) -> bool:
            return json.loads(get(base + "/healthz")[1])["cameras"][name]["state"] == "done"

        wait_for("the paced folders to end", lambda: done("rec") and done("folder"), proc)
        camera.stop()  # the live camera goes quiet: from here nothing new is judged
        wait_for(
            "the live camera to be stale",
            lambda: "live" in json.loads(get(base + "/healthz")[1])["stale"],
            proc,
        )
        wait_for("every queue drained", lambda: queues_drained(base, ("mqtt", "modbus")), proc)
        results = {c: frames_of(tmp_path / "results" / f"{c}.jsonl") for c in CAMERAS}
        for c in CAMERAS:  # the broker PUBACKs the station before it forwards to the plant
            n = len(results[c])
            wait_for(f"all of {c} at the subscriber", lambda c=c, n=n: len(plant.verdicts(c)) >= n)
        url = f"opc.tcp://127.0.0.1:{opcua}/"
        for c in CAMERAS:
            want = opcua_counts(results[c])
            wait_for(
                f"{c}'s OPC UA counters",
                lambda c=c, want=want: {k: read_opcua(url, c)[k] for k in want} == want,
                proc,
            )
        m = scrape(base)
    finally:
        child.finish()
        plant.close()
    assert proc.returncode == 0, child.stderr
    assert "Traceback" not in child.stderr

    assert [len(results["rec"]), len(results["folder"])] == [N_FRAMES, N_FRAMES]
    assert len(results["live"]) > 2 * MORE
    for block, c in enumerate(CAMERAS):
        recs = results[c]
        assert [r["part_id"] for r in recs] == list(range(len(recs))), c  # in order, no gap
        assert not any(r["late"] for r in recs), c
        # MQTT: exactly once after dropping duplicates by (camera, seq), in order.
        got = plant.verdicts(c)
        assert [p["seq"] for p in got] == list(range(1, len(recs) + 1)), c
        assert [(p["part_id"], p["verdict"], p["late"]) for p in got] == [
            (r["part_id"], r["verdict"], False) for r in recs
        ], c
        # Modbus: every part's registers in its camera's block, in order, once.
        assert plc_parts(plc, block) == [
            expected_registers(i + 1, r) for i, r in enumerate(recs)
        ], c
        assert sink_series(m, "twinspect_sink_delivered_total", "mqtt")[c] == len(recs)
        assert sink_series(m, "twinspect_sink_delivered_total", "modbus")[c] == len(recs)
        assert sink_series(m, "twinspect_sink_dropped_total", "mqtt")[c] == 0
        assert sink_series(m, "twinspect_sink_connected", "opc.tcp")[c] == 1.0


# ----------------------------------------------------------------------------- one camera
def test_a_single_run_sends_each_verdict_through_the_shorthands_and_opcua_counts_late(
    tmp_path, untrained_model_dir, camera, broker, plc
):
    """`twinspect run` on one live camera with --mqtt, --modbus, --sink http://… (a webhook)
    and --opcua-port, and a deadline nothing can meet: every verdict reaches the broker, the
    PLC and the webhook, the OPC UA server counts every one of them late, and the queues live
    in OUT.sinks/, a folder made with the umask."""
    hook = Webhook()
    plant = Subscriber(broker.port)
    out = tmp_path / "shift.jsonl"
    opcua = free_port()
    child = Child(
        "--model", untrained_model_dir, "--source", camera.url, "--roi", ROI, "--out", out,
        "--camera", "press9", "--deadline-ms", "0.001", "--fail-safe", "ERROR",
        "--mqtt", f"{broker.url}/line", "--modbus", plc.address(0), "--sink", hook.url,
        "--opcua-port", opcua, "--metrics-port", 0, "--stale-after", 1,
    )  # fmt: skip
    proc = child.proc
    try:
        base = wait_for("the metrics address", lambda: metrics_url(child.err), proc)
        wait_for("5 verdicts at the subscriber", lambda: len(plant.verdicts("press9")) >= 5, proc)
        camera.stop()
        wait_for(
            "the camera to be stale",
            lambda: json.loads(get(base + "/healthz")[1])["stale"] == ["press9"],
            proc,
        )
        kinds = ("mqtt", "modbus", "http")
        wait_for("every queue drained", lambda: queues_drained(base, kinds), proc)
        recs = frames_of(out)
        n = len(recs)  # the broker PUBACKs the station before it forwards to the plant
        wait_for("every verdict at the subscriber", lambda: len(plant.verdicts("press9")) >= n)
        want = opcua_counts(recs)
        url = f"opc.tcp://127.0.0.1:{opcua}/"
        wait_for(
            "the OPC UA counters",
            lambda: {k: read_opcua(url, "press9")[k] for k in want} == want,
            proc,
        )
    finally:
        child.finish()
        plant.close()
        hook.close()
    assert proc.returncode == 0, child.stderr
    assert want["CountLate"] == want["CountERROR"] == len(recs) > 0  # every one late → ERROR
    parts = [(r["part_id"], r["verdict"]) for r in recs]
    assert [(p["part_id"], p["verdict"]) for p in plant.verdicts("press9")] == parts
    assert [(p["part_id"], p["verdict"]) for p in hook.got] == parts
    assert plc_parts(plc, 0) == [expected_registers(i + 1, r) for i, r in enumerate(recs)]
    queues = out.with_name(out.name + QUEUE_SUFFIX)
    umask = os.umask(0)
    os.umask(umask)
    assert queues.stat().st_mode & 0o777 == 0o777 & ~umask
    assert len(list(queues.glob("*.sqlite"))) == 3  # mqtt, modbus, webhook: one queue each


def test_a_station_webhook_sends_its_bearer_token_from_the_environment_or_a_file(
    tmp_path, untrained_model_dir, line, camera, monkeypatch
):
    """A station file names the webhook's token, never holds it: camera `env` reads it from a
    variable of the service's environment (token_env), camera `file` from a file beside the
    station file (token_file, relative to it). The endpoint answers 401 to any other bearer,
    so only the right token gets the verdicts there: every verdict of both cameras arrives."""
    hook = Webhook(token="s3cret")
    monkeypatch.setenv("TWINSPECT_TEST_MES_TOKEN", "s3cret")  # inherited by the child
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mes.token").write_text("s3cret\n")
    path = write_station(
        tmp_path,
        f"""
[metrics]
port = 0
[defaults]
model = "{untrained_model_dir}"
roi = "{ROI}"
stale_after_s = 1
[[cameras]]
name = "env"
source = "{camera.url}"
out = "env.jsonl"
sinks = [{{ url = "{hook.url}", token_env = "TWINSPECT_TEST_MES_TOKEN" }}]
[[cameras]]
name = "file"
source = "{line / "recording"}"
out = "file.jsonl"
max_frames = 4
sinks = [{{ url = "{hook.url}", token_file = "secrets/mes.token" }}]
""",
    )
    by_camera = lambda name: [p for p in hook.got if p["camera"] == name]  # noqa: E731
    child = Child("--config", path)
    proc = child.proc
    try:
        base = wait_for("the metrics address", lambda: metrics_url(child.err), proc)
        wait_for("3 verdicts of camera env", lambda: len(by_camera("env")) >= 3, proc)
        wait_for("4 verdicts of camera file", lambda: len(by_camera("file")) == 4, proc)
        camera.stop()
        wait_for(
            "camera env to be stale",
            lambda: json.loads(get(base + "/healthz")[1])["stale"] == ["env"],
            proc,
        )
        wait_for("every queue drained", lambda: queues_drained(base, ("http",)), proc)
    finally:
        child.finish()
        hook.close()
    assert proc.returncode == 0, child.stderr
    assert "s3cret" not in (path.read_text() + child.stderr + "".join(child.out))
    for name in ("env", "file"):
        recs = frames_of(tmp_path / f"{name}.jsonl")
        parts = [(r["part_id"], r["verdict"]) for r in recs]
        assert [(p["part_id"], p["verdict"]) for p in by_camera(name)] == parts, name


# ----------------------------------------------------------------------------- refusals
def test_queued_sinks_with_results_on_stdout_are_one_line_asking_for_out(
    untrained_model_dir, line, capsys
):
    """Records on stdout leave a queue nowhere to live: refused before the model loads, one
    line asking for --out; an OPC UA server keeps no queue and runs with stdout results."""
    argv = ["run", "--model", str(untrained_model_dir), "--source", str(line / "recording")]
    assert main([*argv, "--mqtt", "mqtt://127.0.0.1:1/line"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "need --out FILE" in err[0] and "mqtt://127.0.0.1:1/line" in err[0]
    assert main([*argv, "--opcua-port", str(free_port()), "--max-frames", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(json.loads(s)["event"] == "frame" for s in out)


TYPOS = {
    "scheme typo": ('sinks = ["mqqt://broker:1883/line"]', "cameras[0].sinks[0]",
                    "unknown sink scheme 'mqqt'"),
    "no scheme": ('sinks = ["broker:1883"]', "cameras[0].sinks[0]", "expected a URL like"),
    "port typo": ('sinks = ["modbus://plc:5o2"]', "cameras[0].sinks[0]", "port is not a number"),
    "mqtt not mqtt": ('mqtt = "http://broker/line"', "cameras[0].mqtt",
                      "expected mqtt://HOST:PORT/PREFIX"),
    "modbus URL of another kind": ('modbus = "mqtt://plc:502"', "cameras[0].modbus",
                                   "expected HOST:PORT or modbus://HOST:PORT"),
    "opcua port 0": ("", "opcua_port", "must be ≥ 1, got 0"),
    "two cameras, one register block": ('modbus = "plc:502"', "cameras[1]: modbus sink",
                                        "writes the PLC registers of cameras[0]"),
    "webhook token variable not set": (
        'sinks = [{ url = "https://mes.local/v", token_env = "TWINSPECT_TEST_UNSET" }]',
        "cameras[0].sinks[0]", "token_env: the variable TWINSPECT_TEST_UNSET is not set"),
    "webhook token file missing": (
        'sinks = [{ url = "https://mes.local/v", token_file = "mes.token" }]',
        "cameras[0].sinks[0]", "token_file"),
    "webhook token key typo": ('sinks = [{ url = "https://mes.local/v", tokn_env = "X" }]',
                               "cameras[0].sinks[0].tokn_env", "did you mean token_env?"),
    "a token for a sink that is not a webhook": (
        'sinks = [{ url = "mqtt://broker/line", token_env = "HOME" }]', "cameras[0].sinks[0]",
        "token_env/token_file/ca/timeout in a table are for http(s):// webhooks"),
    "webhook CA file missing": (
        'sinks = [{ url = "https://mes.local/v", ca = "certs/mes-ca.pem" }]',
        "cameras[0].sinks[0]", "certs/mes-ca.pem: no such file"),
    "webhook timeout not positive": (
        'sinks = [{ url = "https://mes.local/v", timeout = 0 }]', "cameras[0].sinks[0].timeout",
        "must be > 0, got 0"),
    "mqtt password file missing, beside the station file": (
        'sinks = ["mqtt://broker/line?username=l1&password_file=secrets/mqtt.pw"]',
        "cameras[0].sinks[0]", "secrets/mqtt.pw"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TYPOS))
def test_a_sink_typo_in_a_station_file_is_one_line_naming_the_key(
    tmp_path, untrained_model_dir, capsys, monkeypatch, case
):
    """A misspelt sink is refused by key, before any camera opens or results file is touched;
    so is a webhook token whose variable is not set or whose file is not there."""
    monkeypatch.delenv("TWINSPECT_TEST_UNSET", raising=False)
    key, where, what = TYPOS[case]
    top = "opcua_port = 0\n" if case == "opcua port 0" else ""
    cams = "".join(
        f'[[cameras]]\nname = "c{i}"\nsource = "{tmp_path}"\nout = "c{i}.jsonl"\n{key}\n'
        for i in range(2)
    )
    path = write_station(tmp_path, f'{top}[defaults]\nmodel = "{untrained_model_dir}"\n{cams}')
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0], err
    assert where in err[0] and what in err[0], err[0]
    assert not list(tmp_path.glob("c*.jsonl*"))  # nothing created


def test_a_misspelt_sink_option_is_one_line_and_leaves_no_queue_folder(
    tmp_path, untrained_model_dir, line, capsys
):
    """An option the sink does not know is refused by name when the sinks open — after the
    sinks opened before it are closed and the queue folder made for them removed — and before
    any record is written."""
    out = tmp_path / "r.jsonl"
    argv = ["run", "--model", str(untrained_model_dir), "--source", str(line / "recording")]
    argv += ["--out", str(out), "--mqtt", f"mqtt://127.0.0.1:{free_port()}/line"]
    assert main([*argv, "--modbus", f"127.0.0.1:{free_port()}?devce_id=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown option(s) devce_id" in err[0], err
    assert not out.with_name(out.name + QUEUE_SUFFIX).exists()
    assert not out.exists() or out.read_text() == ""


def test_the_shorthands_follow_the_station_precedence(tmp_path, untrained_model_dir):
    """mqtt and modbus are camera keys (the camera's own > the command line > [defaults]) that
    add to `sinks`; opcua_port is station-wide (the command line > the file)."""
    from edge_runtime.sinks_hook import sink_urls
    from edge_runtime.station_config import load_station

    path = write_station(
        tmp_path,
        f"""
opcua_port = 4841
[defaults]
model = "{untrained_model_dir}"
mqtt = "mqtt://broker.local:1883/line"
[[cameras]]
name = "a"
source = "{tmp_path}"
out = "a.jsonl"
sinks = ["http://mes.local/verdicts"]
modbus = "plc.local:502?hr_base=8&coil_base=3"
[[cameras]]
name = "b"
source = "{tmp_path}"
out = "b.jsonl"
mqtt = "mqtts://other.local/line"
""",
    )
    st = load_station(path)
    a, b = st.cameras
    assert st.opcua_port == 4841
    assert sink_urls(a, st.opcua_port) == [
        "http://mes.local/verdicts",
        "mqtt://broker.local:1883/line",
        "modbus://plc.local:502?hr_base=8&coil_base=3",
        "opcua://127.0.0.1:4841",
    ]
    assert sink_urls(b) == ["mqtts://other.local/line"]
    st = load_station(path, {"mqtt": "mqtt://cli.local/x", "opcua_port": 4999})
    a, b = st.cameras
    assert (a.mqtt, st.opcua_port) == ("mqtt://cli.local/x", 4999)  # over [defaults], the file
    assert b.mqtt == "mqtts://other.local/line"  # a camera's own key wins


def test_files_a_sink_names_are_relative_to_the_station_file(tmp_path, untrained_model_dir):
    """password_file and ca in a sink URL's query, and token_file/ca in a webhook's table, are
    found beside the station file like its other paths, whatever folder the service starts in."""
    from edge_runtime.station_config import load_station

    (tmp_path / "secrets").mkdir()
    for name in ("mqtt.pw", "ca.pem", "mes.token"):
        (tmp_path / "secrets" / name).write_text("x\n")
    hook = 'url = "https://mes.local/v", token_file = "secrets/mes.token", ca = "secrets/ca.pem"'
    hook += ", timeout = 2.5"
    path = write_station(
        tmp_path,
        f"""
[defaults]
model = "{untrained_model_dir}"
[[cameras]]
name = "c"
source = "{tmp_path}"
out = "c.jsonl"
mqtt = "mqtts://broker:8883/line?username=l1&password_file=secrets/mqtt.pw&ca=secrets/ca.pem"
sinks = [{{ {hook} }}]
""",
    )
    (cam,) = load_station(path).cameras
    (hook,) = cam.sinks
    assert hook["ca"] == str(tmp_path / "secrets" / "ca.pem") and hook["timeout"] == 2.5
    assert hook["token_file"] == str(tmp_path / "secrets" / "mes.token")
    assert f"password_file={tmp_path}/secrets/mqtt.pw" in cam.mqtt
    assert f"ca={tmp_path}/secrets/ca.pem" in cam.mqtt and "username=l1" in cam.mqtt
