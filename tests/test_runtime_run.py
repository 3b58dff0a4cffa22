"""`twinspect run` end to end on a real exported (untrained) model: records, resume, signals,
kill -9, unreadable frames, --save-ng failures, bad-model refusal, and batch = single results."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.linesim import MjpegCamera
from edge_runtime.model import load_model_dir
from edge_runtime.preprocess import Roi, prepare, to_tensor

ROI = "106,81,108,78"


def frame_image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    img = np.clip(rng.normal(80, 12, (240, 320)), 0, 255).astype(np.uint8)
    cv2.circle(img, (160, 120), 25 + i % 7, 200, -1)
    if i % 3 == 0:
        cv2.line(img, (140, 110), (180, 130), 30, 3)
    return img


def write_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), frame_image(i))
    return folder


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def run(*argv) -> int:
    return main(["run", *map(str, argv)])


@pytest.fixture
def frames(tmp_path) -> Path:
    return write_folder(tmp_path / "frames", 12)


def test_jsonl_fields_and_scores_match_the_model(untrained_model_dir, frames, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert run("--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", out) == 0
    recs = lines(out)
    assert [r["frame"] for r in recs] == list(range(12))
    model = load_model_dir(untrained_model_dir)
    thr = model.sidecar.threshold.value
    roi = Roi.parse(ROI)
    x = to_tensor(
        np.stack([prepare(frame_image(i), model.spec, roi) for i in range(12)]), model.spec
    )
    expected = model.score_batch(x)
    for r, s in zip(recs, expected, strict=True):
        assert r["event"] == "frame" and r["source"] == f"{r['frame']:06d}.png"
        assert r["score"] == pytest.approx(s, rel=1e-5)
        assert r["score_norm"] == pytest.approx(min(1.0, s / (2 * thr)), rel=1e-5)
        assert r["verdict"] == ("NG" if s > thr else "OK") and r["reason"] is None
        assert r["threshold"] == thr and r["threshold_from"] == "sidecar"
        assert set(r["latency_us"]) == {"preprocess", "embed", "score", "total"}
        assert r["ts"] > 1e9 and r["t_mono"] > 0 and r["batch"] == 1
    summary = capsys.readouterr().out  # results in a file: summary on stdout
    assert "frames 12:" in summary and "latency µs" in summary and "yield" in summary
    assert "ERROR 0" in summary


def test_threshold_override_csv_and_batch(untrained_model_dir, frames, tmp_path):
    single, batched = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert (
        run("--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", single) == 0
    )
    assert (
        run("--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--batch", 5,
            "--out", batched) == 0
    )  # fmt: skip
    a, b = lines(single), lines(batched)
    assert [r["frame"] for r in b] == list(range(12)) and {r["batch"] for r in b} == {5, 2}
    np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], rtol=1e-5)
    thr = float(np.median([r["score"] for r in a]))
    out = tmp_path / "c.csv"
    args = ["--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--csv"]
    assert run(*args, "--threshold", thr, "--out", out) == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 12 and {r["threshold_from"] for r in rows} == {"cli"}
    assert {r["verdict"] for r in rows} == {"OK", "NG"}
    assert all(float(r["total_us"]) > 0 for r in rows)


def test_unreadable_blank_and_wrong_size_frames_get_error_records(
    untrained_model_dir, frames, tmp_path
):
    (frames / "000003.png").write_bytes(b"\x89PNG truncated")
    cv2.imwrite(str(frames / "000005.png"), np.full((240, 320), 128, np.uint8))
    cv2.imwrite(str(frames / "000007.png"), frame_image(7)[:100, :100])
    out = tmp_path / "r.jsonl"
    for batch in (1, 4):
        args = ["--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", out]
        assert run(*args, "--batch", batch, "--overwrite") == 0
        recs = {r["frame"]: r for r in lines(out)}
        assert sorted(recs) == list(range(12))  # nothing dropped
        assert recs[3]["verdict"] == "ERROR" and "cannot decode" in recs[3]["reason"]
        assert recs[5]["verdict"] == "ERROR" and "blank frame" in recs[5]["reason"]
        assert recs[7]["verdict"] == "ERROR" and "does not fit" in recs[7]["reason"]
        assert all(recs[i]["score"] is None for i in (3, 5, 7))
        assert all(recs[i]["verdict"] in ("OK", "NG") for i in recs if i not in (3, 5, 7))


def test_save_ng_and_save_failure_keeps_inspecting(untrained_model_dir, frames, tmp_path):
    base = ["--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--threshold", -1]
    ng, out = tmp_path / "ng", tmp_path / "r.jsonl"
    assert run(*base, "--save-ng", ng, "--max-frames", 3, "--out", out) == 0
    every = lines(out)
    recs = [r for r in every if r["event"] == "frame"]
    assert [r["verdict"] for r in recs] == ["NG"] * 3
    crop = cv2.imread(recs[0]["saved_crop"], cv2.IMREAD_UNCHANGED)
    full = cv2.imread(recs[0]["saved_frame"], cv2.IMREAD_UNCHANGED)
    assert crop.shape[:2] == (78, 108) and full.shape == (240, 320, 3)
    # each part's heatmap is drawn behind the loop: its own record, after the part's
    heats = [r for r in every if r["event"] == "heat"]
    assert [h["frame"] for h in heats] == [r["frame"] for r in recs]
    for h in heats:
        assert every.index(h) > every.index(next(r for r in recs if r["frame"] == h["frame"]))
        assert h["part_id"] == h["frame"] and "saved_heat" not in recs[0]
    heat = cv2.imread(heats[0]["saved_heat"], cv2.IMREAD_UNCHANGED)  # where the part differs
    assert "heat" in Path(heats[0]["saved_heat"]).name and heat.shape == (78, 108, 3)
    assert 0 <= heats[0]["heat_peak_x"] < 108 and 0 <= heats[0]["heat_peak_y"] < 78
    assert 0 < heats[0]["heat_area"] <= 1
    blocker = tmp_path / "a-file"  # a folder that cannot be made, even as root
    blocker.write_text("x")
    assert run(*base, "--save-ng", blocker / "ng", "--out", out, "--overwrite") == 0
    recs = lines(out)
    assert len(recs) == 12 and all("save_error" in r and r["verdict"] == "NG" for r in recs)
    assert all(r["event"] == "frame" for r in recs)  # no review images, no heatmap either


def test_heatmaps_wait_behind_the_line_and_a_full_queue_is_said(untrained_model_dir, tmp_path):
    """Parts rejected faster than their heatmaps are drawn are not held up: past the queue's
    size a part goes without one and says so; every queued one is drawn by close()."""
    from edge_runtime.inspector import Inspector
    from edge_runtime.model import load_model_dir
    from edge_runtime.review import HeatWorker
    from edge_runtime.sources import Frame

    model = load_model_dir(untrained_model_dir)
    image = np.random.default_rng(0).integers(0, 255, (26, 36), dtype=np.uint8)
    drawn: list[dict] = []
    worker = HeatWorker(Inspector(model, None, None, 1, 0.0), drawn.append, pending=2)
    refused = {}
    for i in range(40):  # submitting takes microseconds, a heatmap milliseconds
        frame = Frame(index=i, name=f"{i}.png", image=image, ts=0.0, t_mono=0.0)
        why = worker.submit(tmp_path / f"{i}_heat.png", frame, {"event": "heat", "frame": i})
        if why:
            refused[i] = why
    worker.close()
    assert refused and all("2 heatmaps already waiting" in w for w in refused.values())
    assert sorted(r["frame"] for r in drawn) == sorted(set(range(40)) - set(refused))
    assert all((tmp_path / f"{r['frame']}_heat.png").is_file() for r in drawn)


def test_resume_skips_recorded_frames_and_cuts_a_torn_line(untrained_model_dir, frames, tmp_path):
    out = tmp_path / "r.jsonl"
    base = ["--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", out]
    assert run(*base, "--max-frames", 5) == 0
    with out.open("a") as f:
        f.write('{"event":"frame","frame":5,"sou')  # a write cut by kill -9
    assert run(*base) == 2  # refuses to overwrite without --resume/--overwrite
    assert run(*base, "--resume") == 0
    recs = lines(out)
    assert [r["frame"] for r in recs] == list(range(12))
    assert run(*base, "--resume") == 0 and len(lines(out)) == 12  # nothing left to do


def test_bad_model_refused_before_the_source_is_opened(tmp_path, capsys):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "model.json").write_text("{not json")
    assert run("--model", bad, "--source", tmp_path / "no-such-source.avi") == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "no-such-source" not in err and len(err.splitlines()) == 1


def test_show_on_a_headless_build_is_one_clear_line(untrained_model_dir, frames, capsys):
    code = run("--model", untrained_model_dir, "--source", frames, "--show")
    err = capsys.readouterr().err
    assert code == 2 and "--show needs" in err and len(err.splitlines()) == 1


def test_live_on_a_video_file_stops_at_its_end(untrained_model_dir, tmp_path):
    """Issue 11: `--live` on a file looped forever (end of file = a camera outage, reopened
    from the start). A file played like a camera now ends the run at its end: exit 0, no
    outage records. In a subprocess, so the old behaviour fails by timeout instead of hanging."""
    video = _write_video(tmp_path / "cam.avi", 5, fps=60)
    out = tmp_path / "r.jsonl"
    proc = _spawn(untrained_model_dir, video, out, "--live", "--reconnect-wait", 0.05)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr
    recs = lines(out)
    assert recs and all(r["event"] == "frame" for r in recs)  # no outage at the end of a file
    assert [r["frame"] for r in recs] == list(range(len(recs))) and len(recs) <= 5
    assert "outages" not in stdout and f"frames {len(recs)}:" in stdout
    args = ["--model", untrained_model_dir, "--source", video, "--out", out]
    assert run(*args, "--live", "--batch", 4, "--overwrite") == 2


# ------------------------------------------------------------------------------- subprocesses
def _spawn(model: Path, source: Path | str, out: Path, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(model)]
    cmd += ["--source", str(source), "--roi", ROI, "--out", str(out), *map(str, extra)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} records after {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_run_keeps_completed_records_then_resume_completes(
    untrained_model_dir, tmp_path, sig
):
    frames = write_folder(tmp_path / "frames", 60)
    out = tmp_path / "r.jsonl"
    proc = _spawn(untrained_model_dir, frames, out, "--fps", 50)
    _wait_for_lines(out, 5, proc)
    os.kill(proc.pid, sig)
    stdout, _ = proc.communicate(timeout=30)
    text = out.read_text()
    complete = text.splitlines()[: text.count("\n")]
    recs = [json.loads(s) for s in complete]
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert 5 <= len(recs) < 60
    if sig == signal.SIGTERM:
        assert proc.returncode == 0 and text.endswith("\n")  # frame in hand finished, flushed
        assert "stopped by SIGTERM" in stdout and f"frames {len(recs)}:" in stdout
    else:
        assert proc.returncode == -signal.SIGKILL  # at most the line being written is torn
    proc = _spawn(untrained_model_dir, frames, out, "--resume")
    assert proc.wait(timeout=60) == 0
    assert [r["frame"] for r in lines(out)] == list(range(60))


# ------------------------------------------------------------------------------- a live stream
@pytest.fixture
def mjpeg_url() -> Iterator[str]:
    """An IP camera's MJPEG endpoint: multipart JPEG frames, one every 20 ms, until the client
    goes away (what `twinspect run --source http://…/stream.mjpg` meets on a real line)."""
    cam = MjpegCamera.from_images([frame_image(i) for i in range(8)])
    cam.start()
    yield cam.url
    cam.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_on_a_live_http_stream_finishes_and_exits_0(
    untrained_model_dir, tmp_path, mjpeg_url, sig
):
    """Issue 11 F1: the grab thread sat in OpenCV's FFmpeg read() when the interpreter exited,
    and tearing it down aborted the process (exit 134, "FATAL: exception not rethrown")."""
    out = tmp_path / "r.jsonl"
    proc = _spawn(untrained_model_dir, mjpeg_url, out)
    _wait_for_lines(out, 5, proc)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    text = out.read_text()
    recs = [json.loads(s) for s in text.splitlines()]
    assert text.endswith("\n") and len(recs) >= 5
    assert [r["frame"] for r in recs] == list(range(len(recs)))
    assert f"stopped by {sig.name}" in stdout and f"frames {len(recs)}:" in stdout


@pytest.mark.parametrize("mode", ["--overwrite", "--resume"])
def test_second_writer_on_the_same_out_is_refused(untrained_model_dir, tmp_path, capsys, mode):
    """Issue 11 F2: a second `twinspect run` on a results file another run is writing exits 2
    naming the file and the other process, and the first run's records stay whole."""
    frames = write_folder(tmp_path / "frames", 60)
    out = tmp_path / "r.jsonl"
    first = _spawn(untrained_model_dir, frames, out, "--fps", 20)
    try:
        _wait_for_lines(out, 3, first)
        args = ["--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", out]
        assert run(*args, mode) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(out) in err[0] and f"pid {first.pid}" in err[0], err
    finally:
        os.kill(first.pid, signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0
    recs = lines(out)  # every line whole, none overwritten
    assert [r["frame"] for r in recs] == list(range(len(recs))) and len(recs) >= 3


def _other_model(model_dir: Path, tmp_path: Path) -> Path:
    """The same network saved with a different doc string: a different ONNX file (sha256) that
    the runtime loads like any export."""
    import shutil

    import onnx

    from edge_runtime.files import sha256_file

    other = tmp_path / "other-model"
    shutil.copytree(model_dir, other)
    m = onnx.load(other / "model.onnx")
    m.doc_string = "another export"
    onnx.save(m, other / "model.onnx")
    sidecar = json.loads((other / "model.json").read_text())
    sidecar["model_sha256"] = sha256_file(other / "model.onnx")
    (other / "model.json").write_text(json.dumps(sidecar))
    return other


@pytest.mark.parametrize("change", ["source", "model", "threshold", "roi", "csv"])
def test_resume_with_a_different_source_model_or_threshold_is_refused(
    untrained_model_dir, frames, tmp_path, capsys, change
):
    """Issue 11 F3: --resume checks the results file was made by the same source, model,
    threshold (and ROI, format); otherwise exit 2 naming what differs, unless --force."""
    out = tmp_path / "r.jsonl"
    base = {"--model": untrained_model_dir, "--source": frames, "--roi": ROI, "--out": out}
    assert run(*[str(x) for kv in base.items() for x in kv], "--max-frames", 4) == 0
    state = json.loads((tmp_path / "r.jsonl.run.json").read_text())
    assert state["source"] == str(frames) and state["roi"] == Roi.parse(ROI).to_dict()
    assert state["model_sha256"] == load_model_dir(untrained_model_dir).sidecar.model_sha256
    capsys.readouterr()
    changed, extra = dict(base), []
    if change == "source":
        changed["--source"] = write_folder(tmp_path / "other-frames", 12)
    elif change == "model":
        changed["--model"] = _other_model(untrained_model_dir, tmp_path)
    elif change == "threshold":
        extra = ["--threshold", 0.5]
    elif change == "roi":
        changed["--roi"] = "100,80,108,78"
    else:
        extra = ["--csv"]
    argv = [*[str(x) for kv in changed.items() for x in kv], *extra, "--resume"]
    before = out.read_bytes()
    assert run(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0], err
    what = {"model": "model sha256 ", "csv": "cannot mix formats"}.get(change, f"{change} ")
    assert what in err[0] and ("--force" in err[0]) == (change != "csv"), err
    assert out.read_bytes() == before  # nothing touched
    if change == "csv":
        return  # a CSV tail on a JSON-lines file is never useful, even forced
    assert run(*argv, "--force") == 0
    recs = lines(out)
    assert [r["frame"] for r in recs] == list(range(12))
    state = json.loads((tmp_path / "r.jsonl.run.json").read_text())
    assert len(state["resumes"]) == 1 and state["resumes"][0]["forced"]


def test_resume_with_the_same_settings_is_recorded(untrained_model_dir, frames, tmp_path):
    out = tmp_path / "r.jsonl"
    base = ["--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", out]
    assert run(*base, "--max-frames", 4) == 0
    assert run(*base, "--resume") == 0
    assert [r["frame"] for r in lines(out)] == list(range(12))
    state = json.loads((tmp_path / "r.jsonl.run.json").read_text())
    assert state["resumes"] and state["resumes"][0]["forced"] == []


def _limit_file_size(nbytes: int):
    """preexec_fn: files this child writes may not grow beyond nbytes — a disk that fills up
    after nbytes, without root. SIGXFSZ ignored, so the write fails with EFBIG (an OSError)."""

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_full_disk_keeps_whole_lines_prints_the_summary_and_exits_2(
    untrained_model_dir, frames, tmp_path, fmt
):
    """Issue 11 F4: a write that fails (disk full) is one line naming the file, exit 2, the
    summary of what was recorded, and no torn record at the end of the file."""
    out = tmp_path / f"r.{fmt}"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(untrained_model_dir)]
    cmd += ["--source", str(frames), "--roi", ROI, "--out", str(out)]
    cmd += ["--csv"] if fmt == "csv" else []
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size(1500)
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "File too large" in err[0], err
    text = out.read_text()
    assert text.endswith("\n") and len(text) <= 1500
    if fmt == "csv":
        import csv

        rows = list(csv.DictReader(text.splitlines()))
        frames_ = [int(r["frame"]) for r in rows]
        assert text.splitlines()[0].startswith("event,frame,")
    else:
        frames_ = [json.loads(s)["frame"] for s in text.splitlines()]
    assert frames_ == list(range(len(frames_))) and 0 < len(frames_) < 12
    assert f"frames {len(frames_)}:" in proc.stdout  # the summary counts what was recorded


def test_out_on_dev_full_is_one_line_and_exit_2(untrained_model_dir, frames, capsys):
    code = run(
        "--model", untrained_model_dir, "--source", frames, "--roi", ROI, "--out", "/dev/full"
    )
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "/dev/full" in err[0] and "No space" in err[0], err
    assert "frames 0:" in captured.out


def test_fsync_policy_every_batch_off(untrained_model_dir, frames, tmp_path):
    """--fsync: every record, every N records or 1 s, or never; the records are the same."""
    from edge_runtime.records import FsyncPolicy, RecordWriter

    batch = FsyncPolicy("batch", records=100, seconds=1.0)
    assert not batch.due(0, 5.0) and not batch.due(99, 0.5)
    assert batch.due(100, 0.0) and batch.due(1, 1.0)
    assert FsyncPolicy("every").due(1, 0.0) and not FsyncPolicy("off").due(10**6, 10**6)
    for mode, expected in (("every", 12), ("off", 0)):
        w = RecordWriter(tmp_path / f"{mode}.jsonl", fsync=FsyncPolicy(mode))
        for i in range(12):
            w.write({"event": "frame", "frame": i})
        w.close()
        assert w.fsyncs == expected and len(lines(tmp_path / f"{mode}.jsonl")) == 12
    w = RecordWriter(tmp_path / "batch.jsonl", fsync=FsyncPolicy("batch", records=5))
    for i in range(12):
        w.write({"event": "frame", "frame": i})
    w.close()  # the flusher's thread forces batches as they fall due, close() the rest
    assert w.fsyncs >= 1 and len(lines(tmp_path / "batch.jsonl")) == 12
    base = ["--model", untrained_model_dir, "--source", frames, "--out"]
    results = {}
    for mode in ("every", "batch", "off"):
        assert run(*base, tmp_path / f"cli-{mode}.jsonl", "--fsync", mode) == 0
        results[mode] = [(r["frame"], r["verdict"]) for r in lines(tmp_path / f"cli-{mode}.jsonl")]
    assert results["every"] == results["batch"] == results["off"] and len(results["off"]) == 12
    with pytest.raises(SystemExit) as e:
        run(*base, tmp_path / "x.jsonl", "--fsync", "sometimes")
    assert e.value.code == 2


def test_batch_fsync_waits_for_a_slow_disk_off_the_inspection_thread(tmp_path, monkeypatch):
    """--fsync batch: while the disk takes its time over a flush (here: until the test lets it
    go), the thread writing records goes on writing; close() waits for that flush and forces
    the rest, so every record is on the disk and readable. `every` flushes on the writing
    thread itself: a record is on the disk before write() returns, as that mode promises."""
    from helpers_line import wait_for

    from edge_runtime.records import FsyncPolicy, RecordWriter

    real_fsync = os.fsync
    stuck, release = threading.Event(), threading.Event()
    callers: list[threading.Thread] = []

    def slow_disk(fd: int) -> None:  # the first flush is held until the test lets it go
        callers.append(threading.current_thread())
        if not stuck.is_set():
            stuck.set()
            release.wait(timeout=10)  # bounded: a writer that waited here fails, not hangs
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_disk)
    path = tmp_path / "batch.jsonl"
    w = RecordWriter(path, fsync=FsyncPolicy("batch", records=5))
    for i in range(5):
        w.write({"event": "frame", "frame": i})
    wait_for("a flush to be stuck on the slow disk", stuck.is_set)
    for i in range(5, 50):  # the writing thread is not the one waiting for the disk
        w.write({"event": "frame", "frame": i})
    assert threading.current_thread() not in callers
    release.set()
    w.close()
    assert [r["frame"] for r in lines(path)] == list(range(50))
    assert w.fsyncs >= 1
    callers.clear()
    w = RecordWriter(tmp_path / "every.jsonl", fsync=FsyncPolicy("every"))
    for i in range(3):
        w.write({"event": "frame", "frame": i})
        assert callers[-1] is threading.current_thread() and w.fsyncs == i + 1
    w.close()


def test_a_failed_batch_fsync_stops_the_writer_and_close_says_so(tmp_path, monkeypatch):
    """A flush that fails (EIO: the records may not be on the disk) is raised as the one-line
    ResultsWriteError: by the next write() when the flusher's thread met it, and by close()
    when close's own flush meets it; the file is closed and keeps every record, whole."""
    from helpers_line import wait_for

    from edge_runtime.records import FsyncPolicy, RecordWriter, ResultsWriteError

    def broken_disk(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken_disk)
    path = tmp_path / "batch.jsonl"
    w = RecordWriter(path, fsync=FsyncPolicy("batch", records=5))

    def write_refused() -> ResultsWriteError | None:
        try:
            w.write({"event": "frame", "frame": w.count})
        except ResultsWriteError as e:
            return e
        return None

    err = wait_for("a write to report the failed flush", write_refused)
    assert str(path) in str(err) and "cannot force records to disk" in str(err)
    assert "Input/output error" in str(err)
    with pytest.raises(ResultsWriteError, match="cannot force records to disk"):
        w.close()
    w.close()  # closed once: a second close has nothing left to do
    assert [r["frame"] for r in lines(path)] == list(range(w.count)) and w.count >= 1
    w = RecordWriter(tmp_path / "quiet.jsonl", fsync=FsyncPolicy("batch", records=100))
    w.write({"event": "frame", "frame": 0})  # no flush due: close() makes the one flush
    with pytest.raises(ResultsWriteError, match="Input/output error"):
        w.close()
    assert lines(tmp_path / "quiet.jsonl") == [{"event": "frame", "frame": 0}]


def test_results_state_and_figures_follow_the_umask(untrained_model_dir, frames, tmp_path):
    """Issue 11 F6: files twinspect writes get 0666 & ~umask, as open() gives, in a child
    process with umask 002 (a shared group on the line PC)."""
    import stat

    out, figures = tmp_path / "r.jsonl", tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(untrained_model_dir)]
    cmd += ["--source", str(frames), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, preexec_fn=lambda: os.umask(0o002))
    rec = tmp_path / "rec"
    write_folder(rec / "frames", 4)
    (rec / "labels.csv").write_text("frame,label\n0,0\n1,1\n2,0\n3,1\n")
    (rec / "roi.json").write_text(json.dumps(Roi.parse(ROI).to_dict()))
    cmd = [sys.executable, "-m", "edge_runtime.cli", "eval", "--model", str(untrained_model_dir)]
    cmd += ["--data", str(rec), "--json", str(figures)]
    subprocess.run(cmd, check=True, capture_output=True, preexec_fn=lambda: os.umask(0o002))
    for path in (out, tmp_path / "r.jsonl.run.json", figures):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts the connection and never says a word (a hung camera web server)."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg"
    closing.set()
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("timeout", [None, 1])
def test_a_url_that_never_answers_gives_up_after_the_open_timeout(
    untrained_model_dir, tmp_path, silent_url, timeout
):
    """Issue 11 F7: it took 40 s (an undocumented 10 s, then 30 s more through a second
    backend). Now --open-timeout (default 5 s) bounds it, and the line says so."""
    out = tmp_path / "r.jsonl"
    extra = [] if timeout is None else ["--open-timeout", str(timeout)]
    cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(untrained_model_dir)]
    cmd += ["--source", silent_url, "--out", str(out), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - t0 < 30  # generous: the old behaviour took 40 s
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert silent_url in err[0] and f"no answer within {timeout or 5} s" in err[0], err
    assert "--open-timeout" in err[0]


def _write_video(path: Path, n: int, fps: float = 30.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240), False)
    for i in range(n):
        w.write(frame_image(i))
    w.release()
    return path


def test_bare_video_without_roi_warns_once_and_uses_a_roi_json_beside_it(
    untrained_model_dir, tmp_path, capsys
):
    """Issue 11: replaying a recording's line.avi alone shrank whole 320×240 frames to the
    model's 36×26 (every frame NG) without a word."""
    video = _write_video(tmp_path / "rec" / "line.avi", 6)
    base = ["--model", untrained_model_dir, "--source", video]
    assert run(*base, "--out", tmp_path / "whole.jsonl") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "320×240" in err[0], err
    assert "--roi" in err[0] and "recording folder" in err[0]
    assert run(*base, "--roi", ROI, "--out", tmp_path / "roi.jsonl") == 0
    assert capsys.readouterr().err == ""  # an explicit ROI: nothing to warn about
    (video.parent / "roi.json").write_text(json.dumps(Roi.parse(ROI).to_dict()))
    assert run(*base, "--out", tmp_path / "beside.jsonl") == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and str(video.parent / "roi.json") in err[0] and "--roi" in err[0], err
    assert "ROI {'x': 106" in captured.out  # the summary names the ROI used
    with_roi = [r["score"] for r in lines(tmp_path / "roi.jsonl")]
    assert [r["score"] for r in lines(tmp_path / "beside.jsonl")] == with_roi


def test_a_library_caller_that_never_closes_a_stream_still_exits_cleanly(mjpeg_url):
    """A script that takes frames from a live stream and exits without close(): the grab
    thread is stopped at interpreter exit (no abort, no hang waiting for it)."""
    code = (
        "import sys\n"
        "from edge_runtime.sources import open_source\n"
        f"events = open_source({mjpeg_url!r}).events()\n"
        "frame = next(events)\n"
        "print(frame.image.shape)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0 and "(240, 320, 3)" in stdout, stderr
