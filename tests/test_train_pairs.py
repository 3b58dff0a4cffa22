"""Pair generation and the stratified split (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.errors import BadInput
from train.pairs import DIFFERENT, SAME, epoch_pairs, stratified_split


def _labels():
    return np.array(["0"] * 40 + ["1"] * 7 + ["2"] * 13)


def test_pairs_labels_partners_and_balance():
    is_defect = _labels() != "0"
    p = epoch_pairs(is_defect, np.random.default_rng(0))
    good = np.flatnonzero(~is_defect)
    assert len(p) == 2 * good.size
    assert set(np.unique(p.label)) == {SAME, DIFFERENT}
    assert (p.label == SAME).sum() == (p.label == DIFFERENT).sum() == good.size
    assert not is_defect[p.left].any()  # every anchor is good …
    assert sorted(p.left[p.label == SAME]) == sorted(good)  # … and each good image is one
    same = p.label == SAME
    assert not is_defect[p.right[same]].any()
    assert np.all(p.right[same] != p.left[same])  # never paired with itself
    assert sorted(p.right[same]) == sorted(good)  # each good image a partner exactly once
    assert is_defect[p.right[~same]].all()
    uses = np.bincount(p.right[~same], minlength=is_defect.size)[is_defect]
    assert uses.max() - uses.min() <= 1  # defective partners used evenly


def test_pairs_are_seeded_and_fresh_each_epoch():
    is_defect = _labels() != "0"
    a = epoch_pairs(is_defect, np.random.default_rng(7))
    b = epoch_pairs(is_defect, np.random.default_rng(7))
    assert np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right)
    assert np.array_equal(a.label, b.label)
    rng = np.random.default_rng(7)
    e1, e2 = epoch_pairs(is_defect, rng), epoch_pairs(is_defect, rng)
    assert not np.array_equal(e1.right, e2.right)


def test_pairs_unshuffled_order_and_small_sets():
    p = epoch_pairs(np.array([False, False, True]), np.random.default_rng(0), shuffle=False)
    assert p.label.tolist() == [SAME, DIFFERENT, SAME, DIFFERENT]
    assert p.left.tolist() == [0, 0, 1, 1] and p.right.tolist() == [1, 2, 0, 2]
    with pytest.raises(BadInput, match="2 good"):
        epoch_pairs(np.array([False, True]), np.random.default_rng(0))
    with pytest.raises(BadInput, match="defective"):
        epoch_pairs(np.array([False, False]), np.random.default_rng(0))


def test_stratified_split_keeps_proportions_and_is_seeded():
    labels = _labels()
    tr, va = stratified_split(labels, 0.2, np.random.default_rng(3))
    assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == labels.size
    for lab, n in (("0", 40), ("1", 7), ("2", 13)):
        assert (labels[va] == lab).sum() == round(0.2 * n)
    tr2, va2 = stratified_split(labels, 0.2, np.random.default_rng(3))
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    with pytest.raises(BadInput, match="val-fraction"):
        stratified_split(labels, 1.0, np.random.default_rng(0))
