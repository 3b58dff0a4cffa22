"""Synthetic anomalies: every kind changes the part, only inside it, the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from train.anomalies import KINDS, content_box, synthesize


def _padded_parts(n: int = 12, channels: int = 1) -> np.ndarray:
    """Textured parts of 40×60 centred in 64×64, with 0-valued pad rows above and below."""
    rng = np.random.default_rng(0)
    shape = (n, 64, 64) if channels == 1 else (n, 64, 64, 3)
    out = np.zeros(shape, np.uint8)
    out[:, 12:52, 2:62] = rng.integers(60, 200, (n, 40, 60, *shape[3:]), dtype=np.uint8)
    return out


def test_content_box_finds_the_part_inside_the_pad():
    img = _padded_parts(1)[0]
    assert content_box(img, pad_value=0) == (12, 2, 52, 62)
    assert content_box(img, pad_value=None) == (0, 0, 64, 64)  # reflect padding: no pad value


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_part_only_inside_it(kind):
    parts = _padded_parts()
    out = synthesize(parts, np.random.default_rng(1), pad_value=0, kinds=(kind,))
    assert out.shape == parts.shape and out.dtype == np.uint8
    changed = (out != parts).reshape(len(parts), -1).any(axis=1)
    assert changed.mean() >= 0.9, f"{kind} left {int((~changed).sum())} of {len(parts)} intact"
    outside = np.ones((64, 64), bool)
    outside[12:52, 2:62] = False
    assert not (out != parts)[:, outside].any(), f"{kind} drew into the pad"


def test_same_seed_same_anomalies_and_colour_works():
    parts = _padded_parts(8, channels=3)
    a = synthesize(parts, np.random.default_rng(5))
    b = synthesize(parts, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == parts.shape
    assert not np.array_equal(a, synthesize(parts, np.random.default_rng(6)))
