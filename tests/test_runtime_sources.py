"""Frame sources: every kind, in order, with unreadable frames yielded (not dropped), and the live
camera path (grab thread, reconnect, outage records) exercised through a video file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import BadInput, RunFailed
from edge_runtime.preprocess import Roi
from edge_runtime.sources import (
    Frame,
    ImageFiles,
    LiveCapture,
    Outage,
    Reconnect,
    VideoFile,
    open_source,
)


def frame_image(i: int, h: int = 240, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(i)
    img = np.clip(rng.normal(80, 12, (h, w)), 0, 255).astype(np.uint8)
    cv2.circle(img, (w // 2, h // 2), 25 + i % 5, 200, -1)
    return img


def write_video(path: Path, n: int, fps: float = 30.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240), False)
    assert w.isOpened()
    for i in range(n):
        w.write(frame_image(i))
    w.release()
    return path


def write_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), frame_image(i))
    return folder


def frames_of(src, done=frozenset()):
    return [e for e in src.events(done) if isinstance(e, Frame)]


def test_folder_sorted_by_name_and_corrupt_frame_yielded(tmp_path):
    folder = write_folder(tmp_path / "imgs", 4)
    (folder / "000002.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not a frame")
    src = open_source(str(folder))
    assert isinstance(src, ImageFiles) and src.kind == "folder" and src.default_roi is None
    frames = frames_of(src)
    assert [f.name for f in frames] == [f"{i:06d}.png" for i in range(4)]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    bad = frames[2]
    assert bad.image is None and "cannot decode 000002.png" in bad.error
    assert all(f.image.shape == (240, 320) for f in frames if f is not bad)
    assert all(a.t_mono <= b.t_mono for a, b in itertools.pairwise(frames))
    # resume: recorded frames are skipped without being read
    assert [f.index for f in frames_of(src, frozenset({0, 1}))] == [2, 3]


def test_glob_and_single_image(tmp_path):
    folder = write_folder(tmp_path / "imgs", 5)
    src = open_source(str(folder / "00000[1-3].png"))
    assert src.kind == "glob"
    assert [f.name for f in frames_of(src)] == ["000001.png", "000002.png", "000003.png"]
    one = open_source(str(folder / "000004.png"))
    assert [f.name for f in frames_of(one)] == ["000004.png"]
    with pytest.raises(BadInput, match="matches no files"):
        open_source(str(folder / "*.jpg"))


def test_recording_folder_uses_its_roi(tmp_path):
    rec = tmp_path / "data" / "recording"
    write_folder(rec / "frames", 3)
    (rec / "roi.json").write_text(json.dumps({"x": 106, "y": 81, "w": 108, "h": 78}))
    for path in (rec, tmp_path / "data"):  # the recording, or the folder `generate` wrote
        src = open_source(str(path))
        assert src.kind == "recording" and src.default_roi == Roi(106, 81, 108, 78)
        assert len(frames_of(src)) == 3


def test_video_file_read_sequentially_and_resumed(tmp_path):
    video = write_video(tmp_path / "line.avi", 12)
    src = open_source(str(video))
    assert isinstance(src, VideoFile) and not src.live
    frames = frames_of(src)
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].image.shape[:2] == (240, 320)
    assert [f.index for f in frames_of(src, frozenset(range(9)))] == [9, 10, 11]


def test_unknown_source_refused(tmp_path):
    with pytest.raises(BadInput, match="no such file or folder"):
        open_source(str(tmp_path / "missing.avi"))
    assert open_source("0").kind == "camera"  # not opened until iterated
    assert open_source("rtsp://192.0.2.1/stream").kind == "stream"


def test_live_file_ends_at_its_end(tmp_path):
    """`--live` on a file: paced like a camera, and its end is the end (no outage, no loop)."""
    video = write_video(tmp_path / "cam.avi", 6, fps=60)
    src = open_source(str(video), live=True, reconnect=Reconnect(3, 0.05, 0.2))
    assert isinstance(src, LiveCapture) and src.live and src.end_at_eof
    events = list(src.events())
    src.close()
    assert events and all(isinstance(e, Frame) for e in events)
    assert [e.index for e in events] == list(range(len(events))) and len(events) <= 6


def test_live_path_reconnects_and_records_the_outage(tmp_path):
    """A video file standing in for a camera that drops at the file's end, and is reopened."""
    video = write_video(tmp_path / "cam.avi", 6, fps=60)
    src = LiveCapture(str(video), "cam", "camera", Reconnect(3, 0.05, 0.2), end_at_eof=False)
    assert src.live
    events = []
    for ev in src.events():
        events.append(ev)
        if sum(isinstance(e, Frame) for e in events) >= 9:
            break
    src.close()
    frames = [e for e in events if isinstance(e, Frame)]
    outages = [e for e in events if isinstance(e, Outage)]
    assert [f.index for f in frames] == list(range(9))
    assert all(a.t_mono < b.t_mono for a, b in itertools.pairwise(frames))
    assert len(outages) >= 1 and outages[0].recovered and outages[0].attempts >= 1
    assert outages[0].end_mono >= outages[0].start_mono and outages[0].frames_missed >= 0


def test_live_path_gives_up_after_max_reconnects(tmp_path):
    video = write_video(tmp_path / "cam.avi", 4, fps=60)
    src = LiveCapture(str(video), "cam", "camera", Reconnect(2, 0.02, 0.05), end_at_eof=False)
    events = []
    with pytest.raises(RunFailed, match="gave up after 2 reconnect attempts"):
        for ev in src.events():
            events.append(ev)
            if len(events) == 1:
                video.unlink()  # the open capture keeps reading; reopening fails
    assert isinstance(events[-1], Outage) and not events[-1].recovered
    assert events[-1].attempts == 2
    assert sum(isinstance(e, Frame) for e in events) == 4
