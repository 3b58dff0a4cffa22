"""resize(): the fast gray INTER_AREA shrink gives OpenCV's pixels; the rest stays OpenCV's."""

import cv2
import numpy as np
import pytest

from edge_runtime import preprocess
from edge_runtime.preprocess import resize


def _images(rng, shape):
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), 4)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    part = ((xx * 7 + yy * 3) % 256).astype(np.uint8)  # gradients and hard edges
    part[shape[0] // 3 : shape[0] // 2] = 255
    return noise, smooth, part


SHRINKS = [
    ((224, 320), (95, 136)),
    ((224, 320), (120, 136)),
    ((320, 224), (136, 95)),
    ((640, 480), (157, 118)),
    ((131, 640), (26, 160)),
    ((600, 105), (150, 26)),
    ((150, 210), (26, 36)),
    ((300, 420), (300, 179)),  # one axis kept
]


@pytest.mark.parametrize(("src", "dst"), SHRINKS)
def test_gray_shrink_matches_opencv_area(src, dst):
    rng = np.random.default_rng(src[0] * 1000 + dst[1])
    for img in _images(rng, src):
        want = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_AREA)
        got = resize(img, dst)
        assert got.shape == want.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - want).max() <= 1
        assert np.mean(got != want) < 1e-3


def test_fast_path_is_taken_and_bit_exact_on_random_sizes():
    rng = np.random.default_rng(7)
    for _ in range(40):
        rows, cols = (int(v) for v in rng.integers(128, 641, 2))
        h, w = int(rng.integers(26, min(161, rows))), int(rng.integers(26, min(161, cols)))
        if rows % h == 0 and cols % w == 0:
            continue
        img = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
        own = preprocess._area_shrink(img, h, w)
        assert np.array_equal(own, cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))


def test_crop_view_input():
    img = np.random.default_rng(3).integers(0, 256, (400, 500), dtype=np.uint8)
    view = img[17:257, 33:373]
    want = cv2.resize(np.ascontiguousarray(view), (136, 95), interpolation=cv2.INTER_AREA)
    assert np.array_equal(resize(view, (95, 136)), want)


@pytest.mark.parametrize(("src", "dst"), [((224, 320), (95, 136)), ((300, 420), (91, 127))])
def test_colour_shrink_matches_opencv_area(src, dst):
    img = np.random.default_rng(5).integers(0, 256, (*src, 3), dtype=np.uint8)
    want = cv2.resize(img, dst[::-1], interpolation=cv2.INTER_AREA)
    got = resize(img, dst)
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("src", "dst", "interp"),
    [
        ((224, 320), (112, 160), cv2.INTER_AREA),  # ×2
        ((240, 360), (80, 120), cv2.INTER_AREA),  # ×3
        ((95, 136), (224, 320), cv2.INTER_LINEAR),  # enlarge
        ((200, 100), (150, 160), cv2.INTER_LINEAR),  # one side grows
    ],
)
def test_integer_factor_and_enlarge_are_opencv_exactly(src, dst, interp, channels):
    shape = src if channels == 1 else (*src, 3)
    img = np.random.default_rng(11).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(resize(img, dst), cv2.resize(img, dst[::-1], interpolation=interp))


def test_weights_average_each_cell():
    m = preprocess._area_weights(320, 136).toarray()
    assert m.shape == (136, 320)
    assert np.allclose(m.sum(axis=1), 1.0, atol=1e-6)
    assert np.allclose(m.sum(axis=0), 136 / 320, atol=1e-6)  # every input pixel counted once
