"""The tile product: deterministic, sized like the photographed set, masks that match, a readable
recording, and the terminal product left exactly as it was."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.datasets import load_labeled
from edge_runtime.preprocess import InputSpec
from edge_runtime.synthetic.baseline import template_auroc
from edge_runtime.synthetic.tile import FRAME_H, FRAME_W, ROI
from edge_runtime.synthetic.tile_defects import DEFECT_LABELS, GOOD, LABEL_NAMES
from edge_runtime.synthetic.tile_line import render_split
from edge_runtime.synthetic.tile_surface import ASPECT, SIDE_PX, sample_size
from edge_runtime.synthetic.writer import PRODUCT_DEFAULTS, Config, generate, split_labels

# sha256 over (relative path, bytes) of every image a small terminal line writes (preview and
# masks aside), computed on the generator before the tile product and the terminal's masks
# existed: the terminal's images must not change.
TERMINAL_IMAGES_SHA256 = "67ca0c2d2039b5393f960b8255c3f895aeb325157cd1e9b20527fff584cf7f51"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def tile_line(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tile")
    generate(Config(out=out, product="tile", seed=3, n_train=30, n_test=30, n_frames=6, workers=1))
    return out


def test_same_seed_same_bytes_with_one_or_two_workers(tmp_path):
    # ≥ 24 images per split and frames, so the two-worker run really uses a pool
    kw = dict(product="tile", seed=5, n_train=24, n_test=6, n_frames=24, defect_rate=0.5)
    generate(Config(out=tmp_path / "one", workers=1, **kw))
    generate(Config(out=tmp_path / "two", workers=2, **kw))
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one == two
    assert "recording/line.avi" in one and "preview.png" in one and "labels.json" in one


def test_sizes_and_aspects_span_the_documented_ranges(tile_line):
    shapes = [sample_size(np.random.default_rng([0, i])) for i in range(400)]
    sides = [s for hw in shapes for s in hw]
    aspects = [w / h for h, w in shapes]
    assert SIDE_PX[0] <= min(sides) < 140 and 520 < max(sides) <= SIDE_PX[1]
    assert ASPECT[0] - 0.01 <= min(aspects) < 0.5 and 2.2 < max(aspects) <= ASPECT[1] + 0.01
    files = sorted(tile_line.glob("t*/*/*.png"))
    read = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in files]
    assert len({im.shape for im in read}) > len(read) // 2  # each image its own size
    for im in read:
        assert im.dtype == np.uint8 and im.ndim == 2
        assert SIDE_PX[0] <= min(im.shape) and max(im.shape) <= SIDE_PX[1]
    observed = json.loads((tile_line / "manifest.json").read_text())["image_size"]["observed"]
    assert observed["height"][0] == min(im.shape[0] for im in read)


def test_every_defect_has_a_matching_mask_and_good_parts_none(tile_line):
    masks = {str(p.relative_to(tile_line)) for p in tile_line.glob("ground_truth/*/*/*.png")}
    expected = set()
    for split in ("train", "test"):
        for p in sorted((tile_line / split).glob("*/*.png")):
            label = p.parent.name
            rel = f"ground_truth/{split}/{label}/{p.stem}_mask.png"
            if label == GOOD:
                assert rel not in masks
                continue
            expected.add(rel)
            mask = cv2.imread(str(tile_line / rel), cv2.IMREAD_UNCHANGED)
            image = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert mask is not None and mask.shape == image.shape and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}, rel
    assert masks == expected and len(expected) == 18


def test_labels_json_and_manifest(tile_line):
    labels = json.loads((tile_line / "labels.json").read_text())
    assert labels == LABEL_NAMES and list(labels) == [GOOD, *DEFECT_LABELS]
    assert set(DEFECT_LABELS) == {"blowhole", "crack", "fray", "break", "uneven"}
    manifest = json.loads((tile_line / "manifest.json").read_text())
    assert manifest["product"] == "tile" and manifest["seed"] == 3
    assert manifest["image_size"]["sides_px"] == list(SIDE_PX)
    for split in ("train", "test"):
        found = Counter(p.parent.name for p in (tile_line / split).glob("*/*.png"))
        assert found == manifest["counts"][split]
    assert "template_baseline_auroc" in manifest
    preview = cv2.imread(str(tile_line / "preview.png"))
    assert preview is not None and preview.shape[0] > 6 * 128


def test_terminal_writes_labels_json_and_its_images_are_unchanged(tmp_path):
    generate(Config(out=tmp_path, seed=7, n_train=24, n_test=12, n_frames=3, workers=1))
    h = hashlib.sha256()
    for p in sorted(q for q in tmp_path.rglob("*.png") if q.name != "preview.png"):
        if p.relative_to(tmp_path).parts[0] != "ground_truth":  # the masks came later
            h.update(str(p.relative_to(tmp_path)).encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == TERMINAL_IMAGES_SHA256
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["0"] == "good" and labels["1"] == "bent tongue" and len(labels) == 6
    defective = {str(p.relative_to(tmp_path))[:-4] for p in tmp_path.glob("t*/[1-5]/*.png")}
    gt = tmp_path / "ground_truth"
    masks = {str(p.relative_to(gt)).removesuffix("_mask.png") for p in gt.glob("*/*/*.png")}
    assert masks == defective and defective


def test_recording_is_readable_with_its_roi_inside_the_frame(tile_line):
    rec = tile_line / "recording"
    roi = json.loads((rec / "roi.json").read_text())
    assert roi == ROI.to_dict()
    assert roi["x"] + roi["w"] <= FRAME_W and roi["y"] + roi["h"] <= FRAME_H
    frame = cv2.imread(str(rec / "frames/000000.png"), cv2.IMREAD_UNCHANGED)
    assert frame.shape == (FRAME_H, FRAME_W)
    with open(rec / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", "label"] and {r[1] for r in rows[1:]} <= set(LABEL_NAMES)
    data = load_labeled(tile_line, split="recording", spec=InputSpec(height=64, width=64))
    assert len(data) == 6 and data.images.shape == (6, 64, 64)
    assert set(data.labels) <= {"0", *DEFECT_LABELS}
    cap = cv2.VideoCapture(str(rec / "line.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 6


def test_product_defaults_and_a_bad_product(tmp_path, capsys):
    cfg = Config(out=tmp_path, product="tile").resolved()
    assert (cfg.n_train, cfg.n_test, cfg.n_frames, cfg.defect_rate) == (1000, 400, 200, 0.3)
    assert Config(out=tmp_path).resolved().n_train == PRODUCT_DEFAULTS["terminal"]["n_train"]
    assert main(["generate", "--out", str(tmp_path / "x"), "--product", "tiles"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--product" in err[0] and "tiles" in err[0]
    assert not (tmp_path / "x").exists()


def test_naive_template_baseline_is_far_from_perfect():
    """Benign variation must drown whole-image pixel comparisons (the full check, with PCA and
    logistic regression, is `python -m train.baselines DIR --size 64x64`)."""
    train_labels = split_labels(11, "train", 80, 0.0, DEFECT_LABELS, GOOD)
    test_labels = split_labels(11, "test", 80, 0.5, DEFECT_LABELS, GOOD)
    small = [
        np.stack([s.small for s in render_split(11, split, labels, workers=2)])
        for split, labels in (("train", train_labels), ("test", test_labels))
    ]
    res = template_auroc(small[0], train_labels, small[1], test_labels, good_label=GOOD)
    assert res["all"] < 0.8, res


def test_the_tile_looks_alike_mirrored_and_keeps_its_size_for_any_views(tile_line):
    """The tile's textures look alike in every mirror in their pixels, so `--views auto` may
    ship four views; auto's input budget holds four, so the size is the same whatever views
    are asked (train.fit.load_for_views)."""
    from train.fit import TrainConfig, load_for_views
    from train.score_choice import MIRROR_ALIKE, most_views

    cfg = TrainConfig(data=str(tile_line), out="unused")
    spec, data, pixels = load_for_views(cfg, np.random.SeedSequence(0))
    assert max(pixels.values()) <= MIRROR_ALIKE and most_views(pixels) == 4, pixels
    assert data.images.shape[1:3] == spec.size and spec.height * spec.width <= 128 * 128
    assert spec.height * spec.width >= 96 * 96  # the tile's photos are larger: auto shrank them
    four, _, none = load_for_views(replace(cfg, views=4), np.random.SeedSequence(0))
    assert none is None and four.size == spec.size
