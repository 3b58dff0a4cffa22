import cv2
import numpy as np
import pytest

from edge_runtime.errors import BadInput
from edge_runtime.preprocess import InputSpec, Roi, prepare, preprocess, to_gray, to_tensor


def test_prepare_crops_before_resizing_and_converts_bgr():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[50:128, 100:208] = (0, 0, 255)  # a red 108×78 patch exactly at the ROI
    patch = prepare(frame, InputSpec(), Roi(100, 50, 108, 78))
    assert patch.shape == (26, 36) and patch.dtype == np.uint8
    expected = cv2.cvtColor(np.uint8([[[0, 0, 255]]]), cv2.COLOR_BGR2GRAY)[0, 0]
    assert np.all(patch == expected)


def test_to_tensor_layouts_and_scale():
    patches = np.full((3, 26, 36), 255, np.uint8)
    flat = to_tensor(patches, InputSpec())
    assert flat.shape == (3, 936) and flat.dtype == np.float32 and np.allclose(flat, 1.0)
    nhwc = to_tensor(patches, InputSpec(layout="nhwc"))
    assert nhwc.shape == (3, 26, 36, 1)


def test_preprocess_matches_two_step_path():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (78, 108), dtype=np.uint8)
    spec = InputSpec()
    x = preprocess(frame, spec)
    assert np.array_equal(x, to_tensor(prepare(frame, spec), spec))
    expected = cv2.resize(frame, (36, 26), interpolation=cv2.INTER_AREA).ravel() / 255.0
    assert np.allclose(x[0], expected, atol=1e-7)


def test_roi_outside_frame_is_a_clear_error():
    with pytest.raises(BadInput, match="does not fit"):
        prepare(np.zeros((20, 20), np.uint8), InputSpec(), Roi(10, 10, 20, 20))


def test_roi_parse_rejects_garbage():
    assert Roi.parse("1,2,3,4") == Roi(1, 2, 3, 4)
    with pytest.raises(BadInput, match="x,y,w,h"):
        Roi.parse("1,2,3")


def test_to_gray_rejects_float_images():
    with pytest.raises(BadInput, match="8-bit"):
        to_gray(np.zeros((4, 4), np.float32))
