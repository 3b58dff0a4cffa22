"""Choosing the model's input size from the images themselves (`twinspect train --input-size
auto`), and saying in one line how a dataset of mixed shapes is fitted to it.

A line's own camera fixes its part's size and aspect, so the typical training image is the best
guide: its aspect is kept, and its size too while it fits the edge budget. Larger parts are
shrunk until the input area fits `MAX_AUTO_AREA` pixels, which keeps a part under a
millisecond on one core of a mini PC even when the network embeds four mirror views of it (see
`twinspect bench`); a part smaller than the network's minimum is enlarged. `--input-size HxW`
overrides all of it.
"""

from __future__ import annotations

import math
import re

import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.preprocess import InputSpec

MAX_AUTO_AREA = 128 * 128  # input pixels auto will choose at most
# The scaled branch's work grows with the area and with the mirror views (train --views): the
# tile's at 120×136 with four views calls in ~950 µs fp32 and ~730 µs static int8 on one thread
# (export --quantize auto, docs/architecture-search.md). The views do not shrink the input:
# four views at 96×112 cost the tile 0.002–0.013 of test AUROC and 1–2 points of accuracy.
MIN_SIDE = 16  # smallest side auto will choose; the CNN needs at least this much
ROUND_TO = 8  # shrunk sizes are rounded to multiples of this (strides of 2 divide them)
_SIZE = re.compile(r"^\s*(\d+)\s*[x×X]\s*(\d+)\s*$")


def parse_input_size(text: str) -> tuple[int, int] | None:
    """'HxW' → (H, W); 'auto' → None; anything else is one clear BadInput line."""
    if text.strip().lower() == "auto":
        return None
    m = _SIZE.match(text)
    if not m:
        raise BadInput(f"--input-size must be HxW in pixels (e.g. 128x128) or auto, got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h < 1 or w < 1:
        raise BadInput(f"--input-size must be positive, got {text!r}")
    return h, w


def typical_size(sizes: list[tuple[int, int]]) -> tuple[float, float]:
    """(h, w) of the typical image: median area and median aspect (geometric, so that 0.5 and
    2.0 balance), which describes mixed shapes better than the median height and width apart."""
    if not sizes:
        raise BadInput("no readable images to choose an input size from")
    hw = np.asarray(sizes, dtype=np.float64)
    area = float(np.median(hw[:, 0] * hw[:, 1]))
    aspect = float(np.exp(np.median(np.log(hw[:, 0] / hw[:, 1]))))
    return math.sqrt(area * aspect), math.sqrt(area / aspect)


def auto_input_size(sizes: list[tuple[int, int]], min_side: int = MIN_SIDE) -> tuple[int, int]:
    """The input size `auto` picks for images of these (h, w) sizes.

    Images of one size that fits the budget keep it exactly (the default line's 26×36 stays
    26×36); otherwise the typical shape is scaled into the budget and rounded to multiples of 8.
    """
    if len(set(sizes)) == 1 and sizes[0][0] * sizes[0][1] <= MAX_AUTO_AREA:
        h, w = sizes[0]
        if min(h, w) >= min_side:
            return int(h), int(w)
    th, tw = typical_size(sizes)
    s = min(1.0, math.sqrt(MAX_AUTO_AREA / (th * tw)))
    s = max(s, min_side / min(th, tw))  # enlarge a tiny part to the network's minimum
    h, w = th * s, tw * s
    if s < 1.0 or len(set(sizes)) > 1:
        h = max(min_side, ROUND_TO * math.floor(h / ROUND_TO + 0.5))
        w = max(min_side, ROUND_TO * math.floor(w / ROUND_TO + 0.5))
        while h * w > MAX_AUTO_AREA and max(h, w) > min_side:  # rounding up must not break budget
            if h >= w:
                h -= ROUND_TO
            else:
                w -= ROUND_TO
    return round(h), round(w)


def describe_fit(sizes: list[tuple[int, int]], spec: InputSpec, chosen_by: str) -> str:
    """One line for people: what the images are and how they become the model's input."""
    hw = np.asarray(sizes)
    n = len(sizes)
    aspect = hw[:, 0] / hw[:, 1]
    if len(set(sizes)) == 1:
        what = f"{n} images of {hw[0, 0]}×{hw[0, 1]}"
    else:
        what = (
            f"{n} images of mixed sizes, {hw[:, 0].min()}–{hw[:, 0].max()} × "
            f"{hw[:, 1].min()}–{hw[:, 1].max()} px (h×w), aspect h/w "
            f"{aspect.min():.2f}–{aspect.max():.2f}"
        )
    how = {
        "pad": "shrunk or enlarged with the aspect kept, borders "
        + ("mirrored" if spec.pad_mode == "reflect" else f"filled with {spec.pad_value}"),
        "crop": "centre-cropped to the input's aspect, then resized",
        "stretch": "resized to it, aspect not kept",
    }[spec.fit]
    exact = len(set(sizes)) == 1 and tuple(sizes[0]) == spec.size
    fitted = "used as they are" if exact else f"fitted by {spec.fit} ({how})"
    color = "gray" if spec.channels == 1 else "colour (BGR)"
    return (
        f"input {spec.height}×{spec.width} {color} ({chosen_by}): {what}, {fitted}; "
        "--input-size HxW, --fit pad|crop|stretch and --channels 1|3 override"
    )
