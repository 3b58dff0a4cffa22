"""The defect catalogue of the synthetic line: label names and how severe each defect can be.

Every defect draws a severity s in [0, 1] (uniformly); 0 is the subtle end (near tolerance, a
careful person can still see it in the 36×26 image), 1 the obvious end. `Defect` carries the
geometry the renderer needs, all in canonical part units (1 unit = 1 output pixel at scale 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GOOD = "0"
LABEL_NAMES: dict[str, str] = {
    "0": "good",
    "1": "bent tongue",
    "2": "blocked hole",
    "3": "burr",
    "4": "short crimp",
    "5": "scratch or crack",
}
DEFECT_LABELS: tuple[str, ...] = tuple(k for k in LABEL_NAMES if k != GOOD)

# Severity ranges, subtle → obvious, in the units the renderer uses.
BEND_DEG = (6.0, 22.0)  # in-plane bend of tongue + neck about the barrel (nuisance rotates ≤ 3°)
HOLE_BLOCKED = (0.4, 1.0)  # fraction of the hole radius filled (1 = hole missing)
BURR_RADIUS = (0.8, 1.7)  # radius of the bright blob on an edge, units
SHORT_CRIMP = (0.33, 0.65)  # fraction of the barrel length missing, strands showing instead
SCRATCH_WIDTH = (0.45, 1.1)  # line width, units
SCRATCH_CONTRAST = (0.4, 0.75)  # fraction of the metal brightness the line takes away / adds


def _lerp(r: tuple[float, float], s: float) -> float:
    return r[0] + (r[1] - r[0]) * s


@dataclass(frozen=True)
class Defect:
    label: str = GOOD
    severity: float = 0.0
    bend_deg: float = 0.0  # signed
    hole_blocked: float = 0.0  # 0..1 of the hole radius
    hole_dir: float = 0.0  # direction (radians) the blockage grows from
    burr_xy: tuple[float, float] = (0.0, 0.0)  # centre of the burr blob
    burr_r: float = 0.0
    short_crimp: float = 0.0  # fraction of the barrel length missing
    scratch: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x0, y0, x1, y1
    scratch_width: float = 0.0
    scratch_gain: float = 1.0  # multiplies the metal under the line (<1 crack, >1 scratch)


def sample_defect(rng: np.random.Generator, label: str) -> Defect:
    """Draw one defect of `label` ("0" = none) with a uniform severity."""
    from edge_runtime.synthetic import render as r  # geometry constants of the part

    if label == GOOD:
        return Defect()
    s = float(rng.uniform())
    if label == "1":
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        return Defect(label, s, bend_deg=sign * _lerp(BEND_DEG, s))
    if label == "2":
        return Defect(
            label, s, hole_blocked=_lerp(HOLE_BLOCKED, s), hole_dir=rng.uniform(0, 2 * math.pi)
        )
    if label == "3":
        radius = _lerp(BURR_RADIUS, s)
        if rng.uniform() < 0.6:  # on the tongue's outer edge, away from the neck
            a = rng.uniform(math.radians(110), math.radians(250))
            cx, cy = r.RING_C
            d = r.RING_R + 0.35 * radius
            xy = (cx + d * math.cos(a), cy + d * math.sin(a))
        else:  # on the barrel's top or bottom edge
            side = 1.0 if rng.uniform() < 0.5 else -1.0
            x = rng.uniform(r.BARREL_X[0] + 1.0, r.BARREL_X[1] - 1.0)
            xy = (x, side * (r.BARREL_H + 0.35 * radius))
        return Defect(label, s, burr_xy=xy, burr_r=radius)
    if label == "4":
        return Defect(label, s, short_crimp=_lerp(SHORT_CRIMP, s))
    if label == "5":
        if rng.uniform() < 0.55:  # on the tongue's ring, roughly along it
            length = rng.uniform(4.0, 7.0)
            rad = 0.5 * (r.HOLE_R + r.RING_R) + rng.uniform(-0.5, 0.5)
            at = rng.uniform(math.radians(60), math.radians(300))  # not under the neck
            cx, cy = r.RING_C[0] + rad * math.cos(at), r.RING_C[1] + rad * math.sin(at)
            a = at + math.pi / 2 + rng.uniform(-0.5, 0.5)
        else:  # across the barrel
            length = rng.uniform(5.0, 9.0)
            cx = rng.uniform(r.BARREL_X[0] + 2.0, r.BARREL_X[1] - 2.0)
            cy = rng.uniform(-2.0, 2.0)
            a = rng.uniform(0, math.pi)
        dx, dy = 0.5 * length * math.cos(a), 0.5 * length * math.sin(a)
        contrast = _lerp(SCRATCH_CONTRAST, s)
        gain = 1.0 - contrast if rng.uniform() < 0.7 else 1.0 + 0.9 * contrast
        return Defect(
            label,
            s,
            scratch=(cx - dx, cy - dy, cx + dx, cy + dy),
            scratch_width=_lerp(SCRATCH_WIDTH, s),
            scratch_gain=gain,
        )
    raise ValueError(f"unknown defect label {label!r}")
