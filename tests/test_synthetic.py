"""The synthetic line: deterministic, balanced, realistic enough, and the recording matches."""

import csv
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.errors import BadInput
from edge_runtime.evaluation import auroc
from edge_runtime.preprocess import InputSpec, Roi, prepare
from edge_runtime.synthetic import DEFECT_LABELS, LABEL_NAMES
from edge_runtime.synthetic.baseline import template_auroc, template_scores
from edge_runtime.synthetic.defects import Defect, sample_defect
from edge_runtime.synthetic.recording import ROI
from edge_runtime.synthetic.render import render_still, render_still_masked, sample_nuisance
from edge_runtime.synthetic.writer import Config, generate, image_rng, render_split, split_labels


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("line")
    generate(Config(out=out, seed=3, n_train=150, n_test=120, n_frames=60, workers=1))
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(n_train=30, n_test=20, n_frames=4, workers=1)
    generate(Config(out=tmp_path / "a", seed=1, **kw))
    generate(Config(out=tmp_path / "b", seed=1, **kw))
    generate(Config(out=tmp_path / "c", seed=2, **kw))
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert "recording/line.avi" in a and "preview.png" in a and "manifest.json" in a
    assert [k for k in a if k.startswith("ground_truth/")]  # the masks are compared too
    same = [k for k in a if k.endswith(".png") and c.get(k) == a[k]]
    assert not [k for k in same if k.startswith(("train/", "test/", "recording/frames"))]


def test_workers_do_not_change_the_images():
    labels = split_labels(5, "train", 40, 0.33)
    one = render_split(5, "train", labels, workers=1)
    assert np.array_equal(one, render_split(5, "train", labels, workers=2))


def test_label_balance_and_defect_mix():
    labels = split_labels(0, "train", 300, 0.33)
    counts = Counter(labels)
    assert counts["0"] == 201
    assert sorted(counts[d] for d in DEFECT_LABELS) == [19, 20, 20, 20, 20]
    assert labels != sorted(labels)  # shuffled
    assert set(LABEL_NAMES) == {"0", *DEFECT_LABELS} and LABEL_NAMES["0"] == "good"


def test_folder_layout_sizes_and_manifest(line):
    manifest = json.loads((line / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["difficulty"] == 1.0
    assert "generator_version" in manifest
    for split, n in (("train", 150), ("test", 120)):
        files = sorted((line / split).glob("*/*.png"))
        assert len(files) == n
        counts = Counter(f.parent.name for f in files)
        assert counts == manifest["counts"][split]
        img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (26, 36) and img.dtype == np.uint8
    preview = cv2.imread(str(line / "preview.png"))
    assert preview is not None and preview.shape[0] > 6 * 26 * 4


def test_every_defective_image_has_its_mask_and_good_parts_none(line):
    manifest = json.loads((line / "manifest.json").read_text())
    assert manifest["masks"] == "ground_truth/<split>/<label>/NNNNNN_mask.png"
    masks = {str(p.relative_to(line)) for p in line.glob("ground_truth/*/*/*.png")}
    expected = set()
    for split in ("train", "test"):
        for p in sorted((line / split).glob("*/*.png")):
            rel = f"ground_truth/{split}/{p.parent.name}/{p.stem}_mask.png"
            if p.parent.name == "0":
                continue
            expected.add(rel)
            mask = cv2.imread(str(line / rel), cv2.IMREAD_UNCHANGED)
            assert mask is not None and mask.shape == (26, 36) and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}, rel  # non-empty, not everything
    assert masks == expected and len(expected) == round(0.33 * 150) + round(0.33 * 120)


def test_masks_cover_what_the_defect_changed():
    """Per defect type: the image (from disk-identical rendering) against the same part rendered
    without the defect, with the same noise: under the mask they differ a lot, outside hardly."""
    for label in DEFECT_LABELS:
        inside, outside = [], []
        for i in range(6):
            rng = image_rng(9, "test", 100 * int(label) + i)
            nz = sample_nuisance(rng)
            defect = sample_defect(rng, label)
            state = rng.bit_generator.state
            image, mask = render_still_masked(nz, defect, rng)
            rng.bit_generator.state = state  # the same sensor noise, so only the defect differs
            assert np.array_equal(image, render_still(nz, defect, rng))  # masking draws nothing
            rng.bit_generator.state = state
            diff = np.abs(image.astype(float) - render_still(nz, Defect(), rng))
            on = mask > 0
            assert on.any(), (label, i)
            inside.append(diff[on].mean())
            outside.append(diff[~on].mean())
        assert min(inside) > 10 and max(outside) < 2, (label, inside, outside)
    assert render_still_masked(nz, Defect(), rng)[1] is None


def test_images_are_not_degenerate(line):
    imgs = np.stack([cv2.imread(str(p), 0) for p in sorted((line / "train/0").glob("*.png"))])
    mean, std = imgs.mean(), imgs.std()
    assert 50 < mean < 140 and std > 30  # bright part on a darker belt
    assert imgs.std(0).mean() > 3  # good parts vary (nuisance)


def test_recording_frames_labels_and_roi(line):
    rec = line / "recording"
    roi = json.loads((rec / "roi.json").read_text())
    assert roi == ROI.to_dict() and roi["w"] % 36 == 0 and roi["w"] // 36 == roi["h"] // 26
    with open(rec / "labels.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", "label"]
    assert [int(r[0]) for r in rows[1:]] == list(range(60))
    assert {r[1] for r in rows[1:]} <= set(LABEL_NAMES)
    frames = sorted((rec / "frames").glob("*.png"))
    assert [f.name for f in frames[:2]] == ["000000.png", "000001.png"] and len(frames) == 60
    assert cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED).shape == (240, 320)
    cap = cv2.VideoCapture(str(rec / "line.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 60


def test_recorded_crops_look_like_the_stills(line):
    spec = InputSpec()
    good_frames = []
    with open(line / "recording/labels.csv") as fh:
        for row in list(csv.reader(fh))[1:]:
            if row[1] == "0":
                f = cv2.imread(str(line / f"recording/frames/{int(row[0]):06d}.png"), 0)
                good_frames.append(prepare(f, spec, Roi(**ROI.to_dict())))
    crops = np.stack(good_frames)
    train_good = np.stack([cv2.imread(str(p), 0) for p in sorted((line / "train/0").glob("*"))])
    test_good = np.stack([cv2.imread(str(p), 0) for p in sorted((line / "test/0").glob("*"))])
    d_test = template_scores(train_good, test_good)
    d_crop = template_scores(train_good, crops)
    q1, q3 = np.percentile(d_test, [20, 80])
    assert q1 <= np.median(d_crop) <= q3
    assert np.mean((d_crop >= d_test.min()) & (d_crop <= d_test.max())) >= 0.85
    assert abs(crops.mean() - test_good.mean()) < 10
    assert abs(crops.std() - test_good.std()) < 8


def test_template_baseline_is_informative_but_not_perfect():
    train_labels = split_labels(11, "train", 300, 0.0)
    test_labels = split_labels(11, "test", 300, 0.5)
    res = template_auroc(
        render_split(11, "train", train_labels),
        train_labels,
        render_split(11, "test", test_labels),
        test_labels,
    )
    assert 0.6 < res["all"] < 0.95, res
    assert set(res) == {"all", *DEFECT_LABELS}


def test_auroc_helper():
    assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1], bool)) == 1.0
    assert auroc(np.array([1.0, 1.0]), np.array([0, 1], bool)) == 0.5


def test_difficulty_scales_the_nuisance():
    labels = ["0"] * 40
    calm = render_split(2, "train", labels, difficulty=0.0).astype(float)
    rough = render_split(2, "train", labels, difficulty=2.0).astype(float)
    assert calm.std(0).mean() < rough.std(0).mean() / 3


def test_parquet_schema(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    generate(Config(out=tmp_path, n_train=12, n_test=8, n_frames=0, format="parquet", workers=1))
    table = pq.read_table(tmp_path / "train.parquet")
    assert table.column_names == ["dirname", "label", "image"]
    assert str(table.schema.field("image").type) == "struct<bytes: binary, path: string>"
    row = table.slice(0, 1).to_pylist()[0]
    img = cv2.imdecode(np.frombuffer(row["image"]["bytes"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.shape == (26, 36) and row["label"] in LABEL_NAMES
    assert not (tmp_path / "train").exists()
    defective = [r["label"] for r in table.to_pylist() if r["label"] != "0"]
    masks = sorted(tmp_path.glob("ground_truth/train/*/*_mask.png"))
    assert len(masks) == len(defective) > 0  # masks beside the parquet, in the folder layout


def test_flip_labels_are_recorded(tmp_path):
    generate(Config(out=tmp_path, n_train=100, n_test=10, n_frames=0, flip_labels=0.1, workers=1))
    with open(tmp_path / "flipped.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    for r in rows:
        assert (r["true_label"] == "0") != (r["written_label"] == "0")
        assert (tmp_path / r["path"]).is_file() and f"/{r['written_label']}/" in r["path"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (
        manifest["flipped"] == 10 and manifest["true_counts_train"] != manifest["counts"]["train"]
    )


def test_cli_in_process(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["generate", "--out", str(out), "--n-train", "60", "--n-test", "20", "--n-frames", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "train: 60 images" in captured.err and "preview" in captured.out
    assert len(list((out / "train").glob("*/*.png"))) == 60


def test_cli_rejects_bad_numbers(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path), "--defect-rate", "1.5"]) == 2
    assert "--defect-rate" in capsys.readouterr().err
    with pytest.raises(BadInput, match="flip"):
        Config(out=tmp_path, flip_labels=-0.1).check()


def test_regenerating_clears_the_old_line_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "line"
    generate(Config(out=out, seed=1, n_train=30, n_test=10, n_frames=2, workers=1))
    generate(Config(out=out, seed=1, n_train=10, n_test=10, n_frames=0, workers=1))
    assert len(list((out / "train").glob("*/*.png"))) == 10
    assert not (out / "recording/frames/000001.png").exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(BadInput, match=f"--out {foreign}: folder is not empty"):
        generate(Config(out=foreign, n_train=4, n_test=4, n_frames=0, workers=1))
    assert (foreign / "holiday.jpg").exists()
