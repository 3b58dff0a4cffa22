"""Issue 11 (items 1–4): a station file, several cameras in one process, part ids and deadlines,
/metrics and /healthz. Real models, real files, real subprocesses, a stdlib MJPEG server as the
live camera and real HTTP GETs; no timed assertions (bounded waits for conditions only)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from helpers_line import (
    REPO,
    Child,
    MjpegCamera,
    frames_of,
    get,
    metrics_url,
    records,
    scrape,
    small_line,
    wait_for,
    write_station,
)

from edge_runtime.cli import main
from edge_runtime.parts import PartPolicy, stamp

N_FRAMES = 12


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    """A small generated line: recording/frames (12 frames), line.avi and roi.json."""
    return small_line(tmp_path_factory, N_FRAMES)


@pytest.fixture
def station_dir(tmp_path, untrained_model_dir, line) -> Path:
    """A folder laid out like a line PC: models/default, data/recording, results/."""
    shutil.copytree(untrained_model_dir, tmp_path / "models" / "default")
    shutil.copytree(line / "recording", tmp_path / "data" / "recording")
    return tmp_path


@pytest.fixture
def camera(line) -> Iterator[MjpegCamera]:
    cam = MjpegCamera(sorted((line / "recording" / "frames").glob("*.png")))
    cam.start()
    yield cam
    cam.stop()


# ----------------------------------------------------------------------------- helpers
def _iso(text: str) -> datetime:
    assert text.endswith("+00:00") and len(text.split(".")[1]) == 3 + 6, text  # ms, UTC
    return datetime.fromisoformat(text)


# ----------------------------------------------------------------------------- 1, 2, 3
def test_three_cameras_run_to_completion_with_their_own_records_and_part_ids(
    station_dir, camera, untrained_model_dir
):
    """Two offline cameras (a recording by file stem, its frames folder in batches of 4 with
    its own threshold) and a live MJPEG camera, one process: every camera's records are whole,
    in order, with its name and part ids; shared sessions give the scores a single run gives."""
    roi = "106,81,108,78"
    path = write_station(
        station_dir,
        f"""
[defaults]
model = "models/default"

[[cameras]]
name = "rec"
source = "data/recording"
out = "results/rec.jsonl"
part_id_from = "filename"

[[cameras]]
name = "folder"
source = "data/recording/frames"
out = "results/folder.jsonl"
roi = "{roi}"
batch = 4
threshold = 0.5

[[cameras]]
name = "live"
source = "{camera.url}"
out = "results/live.jsonl"
roi = {{ x = 106, y = 81, w = 108, h = 78 }}
max_frames = 15
""",
    )
    child = Child("--config", path)
    stdout = child.finish(sig=None, timeout=120)
    assert child.proc.returncode == 0, child.stderr
    results = station_dir / "results"
    rec, folder, live = (frames_of(results / f"{n}.jsonl") for n in ("rec", "folder", "live"))
    assert [r["frame"] for r in rec] == list(range(N_FRAMES))
    assert [r["part_id"] for r in rec] == [f"{i:06d}" for i in range(N_FRAMES)]  # file stems
    assert [r["part_id"] for r in folder] == list(range(N_FRAMES))  # the frame counter
    assert {r["batch"] for r in folder} == {4} and {r["threshold"] for r in folder} == {0.5}
    assert {r["threshold_from"] for r in folder} == {"station file"}
    assert [r["frame"] for r in live] == list(range(15)) == [r["part_id"] for r in live]
    for name, recs in (("rec", rec), ("folder", folder), ("live", live)):
        assert {r["camera"] for r in recs} == {name}
        for r in recs:
            assert _iso(r["captured_at"]) <= _iso(r["decided_at"])
            assert r["t_decided_mono"] >= r["t_mono"] and r["late"] is False
            assert r["verdict"] in ("OK", "NG") and "verdict_original" not in r
        state = json.loads((results / f"{name}.jsonl.run.json").read_text())
        assert state["results"] == f"{name}.jsonl"
    # The same frames judged by a single run: same scores, whichever camera shared the session.
    single = station_dir / "single.jsonl"
    source = station_dir / "data" / "recording"
    assert main(["run", "--model", str(untrained_model_dir), "--source", str(source),
                 "--out", str(single)]) == 0  # fmt: skip
    expected = [r["score"] for r in records(single)]
    assert [r["score"] for r in rec] == pytest.approx(expected, rel=1e-5)
    assert [r["score"] for r in folder] == pytest.approx(expected, rel=1e-5)
    for name, n in (("rec", 12), ("folder", 12), ("live", 15)):
        assert f"twinspect run: {name}: " in stdout and f"frames {n}:" in stdout
    assert "3 cameras, frames 39:" in stdout


def _bad() -> dict[str, tuple[str, str, str]]:
    """case → (station file text, key path, what the line must say)."""
    head = '[defaults]\nmodel = "models/default"\n'
    cam = '[[cameras]]\nname = "{n}"\nsource = "data/recording"\nout = "results/{n}.jsonl"\n'
    a, b = cam.format(n="a"), cam.format(n="b")
    return {
        "unknown key": (head + a + "dedline_ms = 5\n", "cameras[0].dedline_ms",
                        "unknown key (did you mean deadline_ms?)"),
        "bad type": (head + a + b + 'batch = "4"\n', "cameras[1].batch",
                     'expected a whole number, got "4"'),
        "negative deadline": (head + a + b + "deadline_ms = -5\n", "cameras[1].deadline_ms",
                              "must be > 0, got -5"),
        "missing model": ('[defaults]\nmodel = "models/nope"\n' + a, "defaults.model",
                          "no such model directory"),
        "duplicate name": (head + a + a.replace("a.jsonl", "c.jsonl"), "cameras[1].name",
                           "duplicate camera name 'a' (also cameras[0])"),
        "same out twice": (head + a + b.replace("b.jsonl", "a.jsonl"), "cameras[1].out",
                           "is also cameras[0].out"),
        "bad fail-safe": (head + a + 'fail_safe = "PASS"\n', "cameras[0].fail_safe",
                          "expected one of 'NG', 'ERROR' or 'OK'"),
        "bad sink": (head + a + 'sinks = ["amqp://broker"]\n', "cameras[0].sinks[0]",
                     "unknown sink scheme 'amqp'"),
        "no cameras": (head, "cameras", "missing (required)"),
        "not TOML": (head + "[[cameras]\n", "not valid TOML", ""),
        # Checked after the file: camera b's results hold another run's records, and camera a
        # (overwrite = true) must not have been truncated before b was refused.
        "results in the way": (head + a + "overwrite = true\n" + b, "b: --out",
                               "already holds results"),
    }  # fmt: skip


BAD = _bad()


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_station_file_is_one_line_naming_file_and_key_and_exit_2(station_dir, capsys, case):
    text, where, what = BAD[case]
    path = write_station(station_dir, text)
    results = station_dir / "results"
    results.mkdir()
    kept = {n: f'{{"event":"frame","frame":0,"camera":"{n}"}}\n' for n in ("a", "b")}
    for n, t in kept.items():
        (results / f"{n}.jsonl").write_text(t)
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(path) in err[0] and where in err[0] and what in err[0], err[0]
    assert "Traceback" not in err[0]
    for n, t in kept.items():  # nothing already recorded is lost
        assert (results / f"{n}.jsonl").read_text() == t


def test_command_line_options_with_config_override_defaults_not_cameras(
    station_dir, capsys, monkeypatch
):
    """The example in docs/ loads, and precedence is: the camera's own key > the command line >
    [defaults]; --source/--out belong to the cameras and are refused with --config."""
    from edge_runtime.station_config import load_station

    monkeypatch.setenv("MES_TOKEN", "from the service's environment")  # the example's webhook
    (station_dir / "data" / "line").mkdir()
    (station_dir / "data" / "recording").rename(station_dir / "data" / "line" / "recording")
    example = station_dir / "station.toml"
    shutil.copy(REPO / "docs" / "station.example.toml", example)
    st = load_station(example)
    cams = {c.camera: c for c in st.cameras}
    assert list(cams) == ["press1", "press2", "replay"]
    assert st.metrics_port == 9108 and st.metrics_host == "0.0.0.0"
    assert cams["press1"].deadline_ms == 150 and cams["press2"].deadline_ms == 250
    assert cams["replay"].deadline_ms is None and cams["replay"].part_id_from == "filename"
    assert cams["press2"].source == "0" and cams["press2"].roi.to_dict()["x"] == 100
    assert cams["press1"].model_dir == station_dir / "models" / "default"  # beside the file
    assert cams["replay"].out == station_dir / "results" / "replay.jsonl"
    assert cams["press1"].sinks == (
        "mqtt://broker.local:1883/twinspect/press1",
        {"url": "https://mes.local/twinspect/verdicts", "token_env": "MES_TOKEN"},
    )
    over = load_station(
        example, {"deadline_ms": 99.0, "fsync": "every", "batch": 2, "metrics_port": 0}
    )
    cams = {c.camera: c for c in over.cameras}
    assert cams["press1"].deadline_ms == 150 and cams["replay"].deadline_ms == 99.0
    assert {c.fsync for c in cams.values()} == {"every"}  # over [defaults]
    assert cams["replay"].batch == 16 and cams["press1"].batch == 2  # a camera's own wins
    assert over.metrics_port == 0
    assert main(["run", "--config", str(example), "--source", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--source is set per camera" in err[0]


def test_deadline_replaces_late_verdicts_with_the_fail_safe(station_dir, capsys):
    """Exact numbers on the pure rule; then end to end an absurdly small deadline (everything
    late) against an absurdly large one (nothing late) on the same frames, in one station."""
    rec = {"ts": 1_800_000_000.0, "t_mono": 100.0, "verdict": "OK", "reason": None}
    policy = PartPolicy("c", deadline_ms=10.0)
    on_time = dict(rec)
    assert stamp(on_time, policy, 3, "x.png", 1_800_000_000.0099, 100.0099) is False
    assert on_time["verdict"] == "OK" and on_time["late"] is False and on_time["part_id"] == 3
    late = dict(rec)
    assert stamp(late, policy, 3, "x.png", 1_800_000_000.0101, 100.0101) is True
    assert late["verdict"] == "NG" and late["verdict_original"] == "OK"
    assert late["decision_ms"] == pytest.approx(10.1) and late["reason"].startswith("late: ")
    for fail_safe in ("ERROR", "OK"):
        r = dict(rec, verdict="NG")
        stamp(r, PartPolicy("c", "filename", 10.0, fail_safe), 3, "sn-42.png", 0.0, 101.0)
        assert (r["verdict"], r["verdict_original"], r["part_id"]) == (fail_safe, "NG", "sn-42")
    r = dict(rec)
    assert stamp(r, PartPolicy("c"), 0, "x", 0.0, 1e6) is False  # no deadline: never late

    path = write_station(
        station_dir,
        """
[defaults]
model = "models/default"
[[cameras]]
name = "tight"
source = "data/recording"
out = "results/tight.jsonl"
deadline_ms = 0.001
fail_safe = "ERROR"
[[cameras]]
name = "loose"
source = "data/recording"
out = "results/loose.jsonl"
deadline_ms = 1e9
""",
    )
    assert main(["run", "--config", str(path)]) == 0
    tight = frames_of(station_dir / "results" / "tight.jsonl")
    loose = frames_of(station_dir / "results" / "loose.jsonl")
    assert len(tight) == len(loose) == N_FRAMES
    assert all(r["late"] and r["verdict"] == "ERROR" for r in tight)
    assert not any(r["late"] for r in loose)
    assert [r["verdict_original"] for r in tight] == [r["verdict"] for r in loose]
    out = capsys.readouterr().out
    assert f"late {N_FRAMES} (deadline 0.001 ms)" in out and "late 0 (deadline 1e+09 ms)" in out


# ----------------------------------------------------------------------------- 4
def test_metrics_and_healthz_follow_a_live_station(station_dir, camera):
    """During a live run: /healthz 200 while every camera delivers; the live camera's server
    stopped → 503 naming it; /metrics then matches every camera's records exactly; plugged
    back in → 200 again; SIGTERM → exit 0 with whole records."""
    path = write_station(
        station_dir,
        f"""
[metrics]
port = 0

[defaults]
model = "models/default"
stale_after_s = 1

[[cameras]]
name = "rec"
source = "data/recording"
out = "results/rec.jsonl"
deadline_ms = 0.001

[[cameras]]
name = "good"
source = "data/recording/frames"
out = "results/good.jsonl"
roi = "106,81,108,78"
threshold = 10.0

[[cameras]]
name = "live"
source = "{camera.url}"
out = "results/live.jsonl"
roi = "106,81,108,78"
reconnect_wait_s = 0.05
max_reconnects = 1000
""",
    )
    child = Child("--config", path)
    proc = child.proc
    try:
        base = wait_for("the metrics address on stderr", lambda: metrics_url(child.err), proc)

        def health() -> tuple[int, dict]:
            status, body = get(base + "/healthz")
            return status, json.loads(body)

        def delivering() -> bool:
            status, body = health()
            cams = body["cameras"]
            return (
                status == 200
                and cams["live"]["frames"] > 5
                and cams["rec"]["state"] == cams["good"]["state"] == "done"
            )

        wait_for("/healthz 200 with every camera delivering", delivering, proc)
        camera.stop()  # the live camera's server goes away
        _, body = wait_for("/healthz 503", lambda: (s := health())[0] == 503 and s, proc)
        assert body["status"] == "stale" and body["stale"] == ["live"], body
        assert body["cameras"]["live"]["state"] == "running" and body["cameras"]["rec"]["ok"]

        m = scrape(base)  # nothing moves now: the live camera is silent, the others are done
        results = station_dir / "results"
        for name in ("rec", "good", "live"):
            recs = frames_of(results / f"{name}.jsonl")
            cam = (("camera", name),)
            assert m["twinspect_frames_total", cam] == len(recs) > 0
            for verdict, n in Counter(r["verdict"] for r in recs).items():
                assert m["twinspect_verdicts_total", (*cam, ("verdict", verdict))] == n
            assert m["twinspect_late_verdicts_total", cam] == sum(r["late"] for r in recs)
            stage = tuple(sorted((*cam, ("stage", "total"))))
            assert m["twinspect_latency_seconds_count", stage] == len(recs)
            assert m["twinspect_capture_to_decision_seconds_count", cam] == len(recs)
            assert m["twinspect_camera_up", cam] == 0.0  # done, done, stale
        assert m["twinspect_late_verdicts_total", (("camera", "rec"),)] == N_FRAMES
        good = frames_of(results / "good.jsonl")
        assert {r["verdict"] for r in good} == {"OK"}
        scores = sorted(r["score"] for r in good)
        median = (scores[5] + scores[6]) / 2
        sidecar = json.loads((station_dir / "models" / "default" / "model.json").read_text())
        drift = m["twinspect_score_drift_ratio", (("camera", "good"), ("scale", "threshold"))]
        assert drift == pytest.approx(median / sidecar["threshold"]["value"], rel=1e-9)

        camera.start()  # plugged back in, on the same port: the camera reconnects
        wait_for("/healthz 200 again", lambda: health()[0] == 200, proc)
        assert scrape(base)["twinspect_camera_up", (("camera", "live"),)] == 1.0
    finally:
        stdout = child.finish()
    assert proc.returncode == 0, child.stderr
    live = records(station_dir / "results" / "live.jsonl")
    frames = [r["frame"] for r in live if r["event"] == "frame"]
    assert frames == list(range(len(frames)))
    assert [r["recovered"] for r in live if r["event"] == "outage"] == [True]
    assert "stopped by SIGTERM" in stdout and "live: stream" in stdout


def test_metrics_port_works_without_a_station_file(untrained_model_dir, camera, tmp_path):
    """--metrics-port on a plain run: one camera, named by --camera, on /metrics and /healthz."""
    out = tmp_path / "r.jsonl"
    child = Child(
        "--model", untrained_model_dir, "--source", camera.url, "--roi", "106,81,108,78",
        "--out", out, "--camera", "press9", "--metrics-port", 0,
    )  # fmt: skip
    proc = child.proc
    try:
        base = wait_for("the metrics address", lambda: metrics_url(child.err), proc)
        wait_for(
            "10 frames on /metrics",
            lambda: scrape(base).get(("twinspect_frames_total", (("camera", "press9"),)), 0) >= 10,
            proc,
        )
        status, body = get(base + "/healthz")
        assert status == 200 and json.loads(body)["cameras"]["press9"]["state"] == "running"
    finally:
        child.finish()
    assert proc.returncode == 0, child.stderr
    recs = frames_of(out)
    assert len(recs) >= 10 and {r["camera"] for r in recs} == {"press9"}


# ----------------------------------------------------------------------------- faults
def test_a_camera_that_cannot_open_stops_alone_and_the_run_exits_2(station_dir, capsys):
    """A station whose third camera's URL has nobody behind it: the other cameras record every
    frame; the run ends with exit 2 and one error line naming the camera."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/stream.mjpg"
    path = write_station(
        station_dir,
        f"""
[defaults]
model = "models/default"
[[cameras]]
name = "a"
source = "data/recording"
out = "results/a.jsonl"
[[cameras]]
name = "gone"
source = "{dead}"
out = "results/gone.jsonl"
open_timeout_s = 2
""",
    )
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("twinspect run: error: gone: ") and dead in err[-1], err
    assert [r["frame"] for r in frames_of(station_dir / "results" / "a.jsonl")] == list(
        range(N_FRAMES)
    )
    assert (station_dir / "results" / "gone.jsonl").read_text() == ""


def test_the_base_install_runs_without_the_line_extra(untrained_model_dir, station_dir):
    """Without pydantic and prometheus_client (made unimportable in a child interpreter, as in
    an edge install): a plain run works, and --config / --metrics-port are one line naming the
    'line' extra, exit 2."""
    child = (
        "import sys\n"
        "sys.modules.update(pydantic=None, prometheus_client=None)\n"
        "from edge_runtime.cli import main\n"
        "m, src, out, cfg = sys.argv[1:]\n"
        "codes = [main(['run', '--model', m, '--source', src, '--out', out]),\n"
        "         main(['run', '--config', cfg]),\n"
        "         main(['run', '--model', m, '--source', src, '--out', out, '--overwrite',\n"
        "               '--metrics-port', '0'])]\n"
        "print(codes, sorted(k for k in ('pydantic', 'prometheus_client') if sys.modules.get(k)))\n"
    )
    path = write_station(
        station_dir,
        '[[cameras]]\nname = "a"\nsource = "data/recording"\nmodel = "models/default"\n',
    )
    out = station_dir / "r.jsonl"
    argv = [untrained_model_dir, station_dir / "data" / "recording", out, path]
    proc = subprocess.run(
        [sys.executable, "-c", child, *map(str, argv)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout.strip().splitlines()[-1] == "[0, 2, 2] []", proc.stderr
    errors = [s for s in proc.stderr.splitlines() if "error:" in s]
    assert len(errors) == 2 and all("'line' extra" in s for s in errors), proc.stderr
    assert "--config" in errors[0] and "--metrics-port" in errors[1]
    assert len(frames_of(out)) == N_FRAMES
