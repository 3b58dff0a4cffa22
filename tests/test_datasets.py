"""The one loader: every format round-trips the generator's images, every bad input says where."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.datasets import GOOD_NAMES, iter_labeled, load_labeled, normalize_label
from edge_runtime.errors import BadInput, MissingExtra
from edge_runtime.preprocess import InputSpec, Roi, prepare
from edge_runtime.synthetic.recording import ROI
from edge_runtime.synthetic.writer import Config, generate, render_split, split_labels

SEED = 4
N_TRAIN, N_TEST, N_FRAMES = 40, 30, 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folder")
    generate(
        Config(out=out, seed=SEED, n_train=N_TRAIN, n_test=N_TEST, n_frames=N_FRAMES, workers=1)
    )
    return out


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> Path:
    pytest.importorskip("pyarrow")
    out = tmp_path_factory.mktemp("parquet")
    cfg = Config(out=out, seed=SEED, n_train=N_TRAIN, n_test=N_TEST, n_frames=0, format="parquet")
    generate(cfg)
    return out


def _expected(split: str, n: int) -> tuple[np.ndarray, list[str]]:
    labels = split_labels(SEED, split, n, 0.33)
    return render_split(SEED, split, labels), labels


def _by_index(paths: list[str]) -> np.ndarray:
    """Index of each image in the generator's order (file name NNNNNN.png or #row)."""
    return np.array([int(p.split("#")[-1]) if "#" in p else int(Path(p).stem) for p in paths])


def test_folder_round_trip_and_default_split(folder):
    data = load_labeled(folder)  # default: train
    images, labels = _expected("train", N_TRAIN)
    idx = _by_index(data.paths)
    assert data.images.shape == (N_TRAIN, 26, 36) and data.images.dtype == np.uint8
    assert np.array_equal(data.images, images[idx])
    assert data.labels == [labels[i] for i in idx]
    assert data.paths == sorted(data.paths) and data.skipped == []
    assert data.is_defect.tolist() == [lab != "0" for lab in data.labels]
    test = load_labeled(folder, split="test")
    images, labels = _expected("test", N_TEST)
    assert np.array_equal(test.images, images[_by_index(test.paths)])
    assert test.source.endswith("test")


def test_iter_labeled_matches_load(folder):
    data = load_labeled(folder, split="test")
    items = list(iter_labeled(folder, split="test"))
    assert [p for _, _, p in items] == data.paths
    assert np.array_equal(np.stack([im for im, _, _ in items]), data.images)


def test_other_input_size_goes_through_prepare(folder):
    spec = InputSpec(height=13, width=18)
    data = load_labeled(folder, split="test", spec=spec)
    assert data.images.shape == (N_TEST, 13, 18)
    raw = cv2.imread(data.paths[0], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(data.images[0], prepare(raw, spec))


def test_parquet_round_trip(parquet, folder):
    for src in (parquet, parquet / "train.parquet"):
        data = load_labeled(src, split="train" if src == parquet else None)
        assert data.paths[0].endswith("train.parquet#0")
        images, labels = _expected("train", N_TRAIN)
        assert np.array_equal(data.images, images) and data.labels == labels
    test = load_labeled(parquet, split="test")
    same = load_labeled(folder, split="test")
    order = np.argsort(_by_index(same.paths))
    assert np.array_equal(test.images, same.images[order])


def test_recording_round_trip(folder):
    rec = folder / "recording"
    data = load_labeled(rec)
    assert data.images.shape == (N_FRAMES, 26, 36)
    labels = split_labels(SEED, "recording", N_FRAMES, 0.33)
    assert data.labels == labels
    frame = cv2.imread(str(rec / "frames/000003.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(data.images[3], prepare(frame, InputSpec(), ROI))
    # the recording is also reachable from the line's root
    assert load_labeled(folder, split="recording").labels == labels
    # an explicit ROI wins over roi.json
    other = load_labeled(rec, roi=Roi(0, 0, 108, 78))
    assert not np.array_equal(other.images, data.images)


def _png(path: Path, value: int, shape=(52, 72)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_mvtec_layout(tmp_path):
    root = tmp_path / "bottle"
    for i in range(3):
        _png(root / f"train/good/{i:03d}.png", 100 + i)
    _png(root / "test/good/000.png", 50)
    _png(root / "test/broken_large/000.png", 60)
    _png(root / "test/scratch/000.png", 70, shape=(52, 72, 3))
    _png(root / "ground_truth/scratch/000_mask.png", 255)
    train = load_labeled(root)
    assert train.labels == ["0", "0", "0"] and train.images.shape == (3, 26, 36)
    test = load_labeled(root, split="test", require_both=True)
    assert test.labels == ["broken_large", "0", "scratch"]
    assert test.images[2].mean() == 70
    with pytest.raises(BadInput, match=r"train.*needs both good and defective.*only good"):
        load_labeled(root, split="train", require_both=True)


def test_good_names_are_normalized(tmp_path):
    _png(tmp_path / "OK/a.png", 1)
    _png(tmp_path / "Good/b.png", 2)
    _png(tmp_path / "dent/c.png", 3)
    data = load_labeled(tmp_path)
    assert data.labels == ["0", "0", "dent"]
    assert {normalize_label(n) for n in GOOD_NAMES} == {"0"}


# ---- errors: one BadInput naming the path ----------------------------------------------


def test_missing_path(tmp_path, monkeypatch):
    with pytest.raises(BadInput, match=f"{tmp_path}/nope: path does not exist"):
        load_labeled(tmp_path / "nope")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(BadInput, match="data/lin: path does not exist"):  # not a hub id
        load_labeled("data/lin")


def test_empty_folder(tmp_path):
    with pytest.raises(BadInput, match=f"{tmp_path}: empty folder"):
        load_labeled(tmp_path)
    (tmp_path / "good").mkdir()
    with pytest.raises(BadInput, match=f"{tmp_path}: no images"):
        load_labeled(tmp_path)


def test_unreadable_images_are_skipped_not_silent(tmp_path):
    _png(tmp_path / "good/a.png", 9)
    (tmp_path / "good/b.png").write_bytes(b"not a png")
    data = load_labeled(tmp_path)
    assert len(data) == 1
    assert data.skipped == [(str(tmp_path / "good/b.png"), "not a readable image")]
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(list(iter_labeled(tmp_path))) == 1
    (tmp_path / "good/a.png").write_bytes(b"")
    with pytest.raises(BadInput, match=f"{tmp_path}: none of the 2 images could be read"):
        load_labeled(tmp_path)


def test_missing_split(folder):
    with pytest.raises(BadInput, match=f"{folder}: no 'val' split \\(found train, test\\)"):
        load_labeled(folder, split="val")


def test_parquet_with_wrong_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "x.parquet"
    pq.write_table(pa.table({"pixels": [b"1"], "label": ["0"]}), f)
    with pytest.raises(BadInput, match=f"{f}: parquet columns .*missing \\['image'\\]"):
        load_labeled(f)
    g = tmp_path / "bad.parquet"
    g.write_bytes(b"PAR1 garbage")
    with pytest.raises(BadInput, match=f"{g}: not a readable parquet"):
        load_labeled(g)


def _recording(tmp_path: Path, csv_text: str, roi: dict | None = None) -> Path:
    rec = tmp_path / "rec"
    _png(rec / "frames/000000.png", 80, shape=(240, 320))
    (rec / "labels.csv").write_text(csv_text)
    if roi is not None:
        (rec / "roi.json").write_text(json.dumps(roi))
    return rec


def test_recording_bad_header(tmp_path):
    rec = _recording(tmp_path, "idx,label\n0,0\n", ROI.to_dict())
    with pytest.raises(BadInput, match=f"{rec}/labels.csv: header must be 'frame,label'"):
        load_labeled(rec)


def test_recording_frame_without_file(tmp_path):
    rec = _recording(tmp_path, "frame,label\n0,0\n7,3\n", ROI.to_dict())
    with pytest.raises(BadInput, match=f"{rec}/labels.csv:3: frame 7 has no file"):
        load_labeled(rec)


def test_recording_roi(tmp_path):
    rec = _recording(tmp_path, "frame,label\n0,0\n")
    with pytest.raises(BadInput, match=f"{rec}: a recording needs roi.json"):
        load_labeled(rec)
    (rec / "roi.json").write_text(json.dumps({"x": 300, "y": 0, "w": 108, "h": 78}))
    with pytest.raises(BadInput, match=f"{rec}: none of the 1 images.*does not fit"):
        load_labeled(rec)


def test_hub_id_without_the_extra(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(MissingExtra, match="hub"):
        load_labeled("someone/crimp-terminals")


def test_hub_network_failure_names_the_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class FakeDatasets:
        @staticmethod
        def load_dataset(name, split):
            raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.raises(BadInput, match=r"'someone/crimp-terminals'.*no route to host"):
        load_labeled("someone/crimp-terminals")


def test_label_names_come_from_the_data(tmp_path):
    from edge_runtime.datasets import label_names

    img = np.full((20, 20), 128, np.uint8)
    for label in ("good", "3", "porosity"):
        (tmp_path / "train" / label).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "train" / label / "a.png"), img)
    data = load_labeled(tmp_path, spec=InputSpec(20, 20))
    assert data.names == {"0": "good", "3": "defect 3", "porosity": "porosity"}
    (tmp_path / "labels.csv").write_text("label,name\n3,bent tongue\nporosity,gas pores\n")
    assert load_labeled(tmp_path / "train", spec=InputSpec(20, 20)).names == {
        "0": "good",
        "3": "bent tongue",
        "porosity": "gas pores",
    }
    (tmp_path / "labels.json").write_text('{"good": "OK part", "3": "burr"}')  # json wins
    assert label_names(tmp_path, {"0", "3"}) == {"0": "OK part", "3": "burr"}
    (tmp_path / "labels.json").write_text('["burr"]')
    with pytest.raises(BadInput, match="must be a JSON object of label"):
        label_names(tmp_path, {"3"})
