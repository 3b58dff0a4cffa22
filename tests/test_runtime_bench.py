"""`twinspect bench` runs end to end and reports every figure (no timing assertions), and the
crop-before-gray preprocessing order it relies on gives the same pixels."""

from __future__ import annotations

import json

import numpy as np

from edge_runtime.cli import main
from edge_runtime.preprocess import InputSpec, Roi, crop, prepare, resize, to_gray


def test_bench_reports_every_figure(untrained_model_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(untrained_model_dir), "--parts", "200"]
    argv += ["--batch-parts", "640", "--rss-frames", "20", "--json", str(out)]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    for stage in ("preprocess", "embed", "score", "total"):
        assert 0 < r["latency_us"][stage]["p50"] <= r["latency_us"][stage]["p99"]
    assert r["latency_us"]["errors"] == 0 and r["latency_us"]["parts"] == 200
    assert r["throughput"]["batch"] == 64 and r["throughput"]["parts_per_s"] > 0
    assert r["load_ms"]["median"] > 0 and r["edge_process"]["peak_rss_mb"] > 0
    printed = capsys.readouterr().out
    assert "p50" in printed and "parts/s" in printed and "peak RSS" in printed


def test_crop_before_gray_gives_the_same_patch():
    rng = np.random.default_rng(0)
    spec, roi = InputSpec(), Roi(106, 81, 108, 78)
    for shape in [(240, 320, 3), (240, 320, 4), (240, 320)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        gray_first = resize(crop(to_gray(img), roi), spec.size)
        assert np.array_equal(prepare(img, spec, roi), gray_first)
