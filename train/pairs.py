"""Pairs for the twin network and the stratified train/validation split (pure numpy).

Pairs follow the reference notebook: every good image is an anchor once per epoch; its positive
partner is another good image (pair label 0, "same kind"), its negative partner a defective
image (pair label 1, "different") — the label convention is documented in train/model.py. So an
epoch holds exactly as many same-kind as different pairs. Unlike the reference, which drew its
pairs once, `epoch_pairs` is called with a fresh generator state every epoch; everything is
driven by one seeded `numpy.random.Generator`, so the same seed gives the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.errors import BadInput

SAME = 0  # pair label: both good
DIFFERENT = 1  # pair label: good vs defective


@dataclass(frozen=True)
class Pairs:
    """Indices into one image array, and the pair label of each (left, right) pair."""

    left: np.ndarray  # int64 indices of the anchors (always good images)
    right: np.ndarray  # int64 indices of the partners
    label: np.ndarray  # float32 pair labels, SAME or DIFFERENT

    def __len__(self) -> int:
        return int(self.left.size)


def epoch_pairs(
    is_defect: np.ndarray,
    rng: np.random.Generator,
    shuffle: bool = True,
    synthetic_negatives: bool = False,
) -> Pairs:
    """One epoch of pairs: each good image once as anchor with a good and a defective partner.

    The positive partner is never the anchor itself, and each good image is used as a positive
    partner exactly once; defective partners are used about equally often. Returned in random
    order when `shuffle`, else anchor-by-anchor (positive then negative). With
    `synthetic_negatives` and no defective image (a good-only line), the negative partner is a
    good image that the caller turns into a synthetic anomaly.
    """
    y = np.asarray(is_defect, dtype=bool)
    good = np.flatnonzero(~y)
    bad = np.flatnonzero(y)
    if good.size < 2:
        raise BadInput(f"pairs need at least 2 good images, got {good.size}")
    if bad.size < 1 and synthetic_negatives:
        bad = good
    elif bad.size < 1:
        raise BadInput("pairs need at least 1 defective image, got 0")
    n = good.size
    # Positive partner: walk a random cycle through the good images, so no image is paired
    # with itself and every good image is a positive partner exactly once.
    perm = rng.permutation(n)
    pos = np.empty(n, dtype=np.int64)
    pos[perm] = good[np.roll(perm, -1)]
    anchors = good
    positives = pos
    # Negative partner: defective images drawn so each is used about equally often.
    reps = -(-n // bad.size)
    negatives = np.tile(bad, reps)[rng.permutation(reps * bad.size)[:n]]
    left = np.concatenate([anchors, anchors])
    right = np.concatenate([positives, negatives])
    label = np.concatenate([np.full(n, SAME), np.full(n, DIFFERENT)]).astype(np.float32)
    if shuffle:
        order = rng.permutation(2 * n)
    else:
        order = np.stack([np.arange(n), np.arange(n) + n], axis=1).ravel()
    return Pairs(left[order].astype(np.int64), right[order].astype(np.int64), label[order])


def stratified_split(
    labels: list[str] | np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each label split in the same proportion.

    Every label with at least 2 images keeps at least one in each part; a label with a single
    image stays in training.
    """
    if not 0.0 < val_fraction < 1.0:
        raise BadInput(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    lab = np.asarray(labels)
    train_idx, val_idx = [], []
    for name in sorted(set(lab.tolist())):
        idx = np.flatnonzero(lab == name)
        idx = idx[rng.permutation(idx.size)]
        n_val = round(val_fraction * idx.size)
        n_val = min(max(n_val, 1), idx.size - 1) if idx.size >= 2 else 0
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))
