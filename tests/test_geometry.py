"""Input geometry is part of the model: fit modes, colour, auto size, and the proof that the line
turns the same image bytes into the same tensor as training did, for every mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.datasets import load_labeled
from edge_runtime.errors import BadInput, BadModel
from edge_runtime.geometry import (
    auto_input_size,
    describe_fit,
    parse_input_size,
)
from edge_runtime.preprocess import (
    InputSpec,
    crop_window,
    fit,
    placement,
    prepare,
    to_tensor,
)
from edge_runtime.sidecar import Sidecar


# ------------------------------------------------------------------------------ fit modes
def test_pad_keeps_the_aspect_and_centres_by_hand():
    img = np.full((10, 40), 200, np.uint8)  # 1:4, into 20×20: scale 0.5 → 5×20, rows 7..11
    spec = InputSpec(20, 20, fit="pad", pad_value=9, pad_mode="constant")
    assert placement(10, 40, spec) == (7, 0, 5, 20)
    out = fit(img, spec)
    assert out.shape == (20, 20)
    assert np.all(out[7:12] == 200) and np.all(out[:7] == 9) and np.all(out[12:] == 9)


def test_crop_takes_the_centre_window_by_hand():
    img = np.zeros((10, 40), np.uint8)
    img[:, 15:25] = 255  # the centre 10×10 is white
    spec = InputSpec(20, 20, fit="crop")
    assert crop_window(10, 40, spec) == (0, 15, 10, 10)
    assert np.all(fit(img, spec) == 255)
    tall = InputSpec(10, 40, fit="crop")  # 1:4 window out of a square
    assert crop_window(40, 40, tall) == (15, 0, 10, 40)


def test_stretch_ignores_the_aspect():
    img = np.arange(10 * 40, dtype=np.uint8).reshape(10, 40)
    spec = InputSpec(20, 20, fit="stretch")
    assert np.array_equal(fit(img, spec), cv2.resize(img, (20, 20), interpolation=cv2.INTER_LINEAR))


def test_same_shape_passes_through_in_every_mode():
    img = np.random.default_rng(0).integers(0, 256, (26, 36), dtype=np.uint8)
    for mode in ("pad", "crop", "stretch"):
        assert fit(img, InputSpec(fit=mode)) is img


def test_colour_is_kept_with_three_channels_and_gray_is_repeated():
    bgr = np.zeros((30, 30, 3), np.uint8)
    bgr[..., 2] = 255  # red
    spec = InputSpec(30, 30, channels=3, layout="nhwc")
    patch = prepare(bgr, spec)
    assert patch.shape == (30, 30, 3)
    assert np.all(patch[..., 2] == 255) and np.all(patch[..., 0] == 0)
    gray = prepare(np.full((30, 30), 77, np.uint8), spec)
    assert gray.shape == (30, 30, 3) and np.all(gray == 77)
    x = to_tensor(np.stack([patch, gray]), spec)
    assert x.shape == (2, 30, 30, 3) and np.isclose(x[0, 0, 0, 2], 1.0)
    flat = to_tensor(patch, InputSpec(30, 30, channels=3, layout="flat"))
    assert flat.shape == (1, 2700)


def test_bad_specs_are_one_line_each():
    with pytest.raises(BadInput, match="fit must be one of"):
        InputSpec(fit="zoom")
    with pytest.raises(BadInput, match="channels must be 1"):
        InputSpec(channels=2)
    with pytest.raises(BadInput, match="expected 26×36 patches"):
        to_tensor(np.zeros((2, 20, 20), np.uint8), InputSpec())


# ------------------------------------------------------------------------------ auto size
def test_auto_keeps_a_small_uniform_size_exactly():
    assert auto_input_size([(26, 36)] * 50) == (26, 36)


def test_auto_shrinks_mixed_photos_into_the_budget_keeping_the_typical_aspect():
    rng = np.random.default_rng(1)
    side = np.exp(rng.uniform(np.log(105), np.log(632), 300))
    aspect = np.exp(rng.uniform(np.log(0.4), np.log(2.7), 300))
    sizes = [
        (round(s * np.sqrt(a)), round(s / np.sqrt(a))) for s, a in zip(side, aspect, strict=True)
    ]
    h, w = auto_input_size(sizes)
    assert h * w <= 128 * 128 and h % 8 == 0 and w % 8 == 0
    assert 0.75 <= h / w <= 1.35 and h * w >= 100 * 100
    wide = auto_input_size([(300, 900)] * 3 + [(310, 880)])
    assert wide[0] * wide[1] <= 128 * 128 and 2.6 <= wide[1] / wide[0] <= 3.4
    assert min(auto_input_size([(5, 7)] * 4)) >= 16  # enlarged to the network's minimum


def test_describe_fit_says_how_mixed_images_are_fitted():
    line = describe_fit([(100, 200), (300, 150)], InputSpec(64, 64, fit="pad"), "auto")
    assert "mixed sizes" in line and "aspect h/w 0.50–2.00" in line and "fitted by pad" in line
    same = describe_fit([(26, 36)] * 3, InputSpec(), "auto")
    assert "used as they are" in same


def test_parse_input_size():
    assert parse_input_size("auto") is None
    assert parse_input_size("96x160") == (96, 160) and parse_input_size("96×160") == (96, 160)
    for bad in ("96", "96x", "ax3", "0x5", "96x160x3"):
        with pytest.raises(BadInput, match="--input-size"):
            parse_input_size(bad)


# ------------------------------------------------------------------ old sidecars still load
def test_schema_1_sidecar_loads_as_gray_stretched(untrained_model_dir, tmp_path):
    from edge_runtime.model import load_model_dir

    old = tmp_path / "old"
    shutil.copytree(untrained_model_dir, old)
    d = json.loads((old / "model.json").read_text())
    d["schema_version"] = 1
    for key in ("fit", "pad_value"):
        del d["input"][key]
    (old / "model.json").write_text(json.dumps(d))
    model = load_model_dir(old)
    assert model.spec.fit == "stretch" and model.spec.channels == 1
    frame = np.random.default_rng(2).integers(0, 256, (60, 60), dtype=np.uint8)
    expected = cv2.resize(frame, (36, 26), interpolation=cv2.INTER_AREA)
    assert np.array_equal(prepare(frame, model.spec), expected)
    d["input"]["channels"] = 3
    with pytest.raises(BadModel, match="schema 1 has gray input only"):
        Sidecar.from_dict(d, where="old.json")


# ------------------------------------- the line reproduces training's tensor, for each mode
def _photos(folder: Path, channels: int) -> None:
    """A small folder dataset of mixed sizes and aspects, as a user brings one."""
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(50, 120), (130, 60), (77, 77), (40, 90), (101, 33), (64, 64)]):
        label = "good" if i % 2 == 0 else "porosity"
        img = rng.integers(0, 256, (h, w, 3) if channels == 3 else (h, w), dtype=np.uint8)
        (folder / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / label / f"{i}.png"), img)


@pytest.mark.parametrize(
    ("fit_mode", "channels"), [("pad", 1), ("crop", 1), ("stretch", 1), ("pad", 3)]
)
def test_runtime_tensor_equals_training_tensor(tmp_path, fit_mode, channels):
    pytest.importorskip("keras")
    from conftest import write_untrained_run

    from edge_runtime.datasets import image_files, read_image_file
    from edge_runtime.inspector import Inspector
    from edge_runtime.model import load_model_dir
    from export.build import export_run
    from train.model import input_spec

    spec = input_spec("cnn", (56, 64), channels, fit_mode)  # the scaled network, 56×64
    run = write_untrained_run(tmp_path / "run", arch="cnn", n_val=16, spec=spec)
    export_run(run, tmp_path / "model", log=lambda *_: None)
    model = load_model_dir(tmp_path / "model")
    assert model.spec == spec  # everything about the input came back from the sidecar

    data = tmp_path / "photos"
    _photos(data, channels)
    trained = load_labeled(data, spec=spec)  # training's path: the one loader
    x_train = to_tensor(trained.images, spec)
    insp = Inspector(model)
    files = [p for sub in ("good", "porosity") for p in image_files(data / sub)]
    by_path = {str(p): read_image_file(p) for p in files}  # the runtime's path: same bytes
    for i, path in enumerate(trained.paths):
        assert insp._into(0, by_path[path]).verdict == "OK"
        assert np.array_equal(insp._x[0], x_train[i]), path
    from train.model import load_model

    keras_emb = load_model(run / "embedding.keras").predict(x_train, verbose=0)
    assert np.allclose(model.embed(x_train), keras_emb, atol=1e-4)


def test_schema_2_sidecar_from_before_pad_mode_pads_with_its_constant(untrained_model_dir):
    """pad_mode arrived within schema 2: a sidecar without it meant the constant fill."""
    d = json.loads((untrained_model_dir / "model.json").read_text())
    del d["input"]["pad_mode"]
    d["input"]["pad_value"] = 7
    spec = Sidecar.from_dict(d).input
    assert spec.pad_mode == "constant" and spec.pad_value == 7
    patch = prepare(np.full((10, 40), 200, np.uint8), spec)  # 26×36 ← 1:4, rows 8..16 filled
    assert patch[0, 0] == 7 and patch[13, 18] == 200
