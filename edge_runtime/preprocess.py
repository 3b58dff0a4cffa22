"""The one preprocessing path, used by training, export and the line alike.

A frame (any size, gray or BGR) becomes the model input in three pure steps: crop the region of
interest → convert to the model's colour (gray, or BGR kept) → fit it to the model's input size.
Cropping comes first because converting or resizing a whole camera frame costs milliseconds, a
crop microseconds. The result stays uint8 until `to_tensor`, so datasets can be stored compactly
and scaled in one vectorized step.

Fitting is part of the model, written in its sidecar, because a real part's photos rarely have
the network's aspect ratio:
  pad      shrink (or enlarge) to fit inside H×W with the aspect kept, centre it, and mirror
           the part into the borders (`pad_mode` reflect) or fill them with `pad_value`
           (constant) — nothing of the part is lost or distorted (the default);
  crop     cut the largest centred window of the input's aspect, then resize — nothing is
           distorted, the ends of a long part are lost;
  stretch  resize to H×W regardless of aspect (twinspect ≤ 0.1's only behaviour; schema-1
           sidecars mean this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import sparse

from edge_runtime.errors import BadInput

LAYOUTS = ("flat", "nhwc")
FITS = ("pad", "crop", "stretch")
PAD_MODES = ("reflect", "constant")
CHANNELS = (1, 3)  # 1 = gray, 3 = BGR (OpenCV's order, as cameras and image files decode)


@dataclass(frozen=True)
class InputSpec:
    """What the embedding network takes; stored in the sidecar so the line cannot guess wrong."""

    height: int = 26  # rows of the model input
    width: int = 36  # columns of the model input
    channels: int = 1  # 1 = gray, 3 = BGR
    scale: float = 1.0 / 255.0  # uint8 → float32 multiplier
    layout: str = "flat"  # "flat": N×(H·W·C) for the MLP; "nhwc": N×H×W×C for the CNN
    fit: str = "pad"  # how an input of another shape is fitted: pad | crop | stretch
    pad_value: int = 0  # gray level of the borders `pad` adds when pad_mode is "constant"
    # "reflect" mirrors the part into the borders: no artificial edges for the network to learn
    # around (measured better on the tile product than a constant fill); "constant" uses pad_value
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise BadInput(f"input layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.fit not in FITS:
            raise BadInput(f"input fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.channels not in CHANNELS:
            raise BadInput(f"input channels must be 1 (gray) or 3 (BGR), got {self.channels}")
        if self.height <= 0 or self.width <= 0:
            raise BadInput(f"input must be a positive H×W size, got {self.height}×{self.width}")
        if self.pad_mode not in PAD_MODES:
            raise BadInput(
                f"input pad_mode must be one of {', '.join(PAD_MODES)}, got {self.pad_mode!r}"
            )
        if not 0 <= self.pad_value <= 255:
            raise BadInput(f"input pad_value must be 0..255, got {self.pad_value}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def color(self) -> str:
        return "gray" if self.channels == 1 else "bgr"

    @property
    def patch_shape(self) -> tuple[int, ...]:
        """Shape of one prepared uint8 patch: H×W for gray, H×W×3 for BGR."""
        return self.size if self.channels == 1 else (*self.size, self.channels)

    def tensor_shape(self, n: int | None = None) -> tuple[int | None, ...]:
        """Shape of a batch of n inputs (None = dynamic batch)."""
        if self.layout == "flat":
            return (n, self.height * self.width * self.channels)
        return (n, self.height, self.width, self.channels)


@dataclass(frozen=True)
class Roi:
    """Region of interest in pixels of the full frame."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def parse(cls, text: str) -> Roi:
        """From 'x,y,w,h' as typed on a command line."""
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError:
            raise BadInput(f"--roi must be x,y,w,h in whole pixels, got {text!r}") from None
        return cls.from_dict({"x": x, "y": y, "w": w, "h": h})

    @classmethod
    def from_dict(cls, d: dict, where: str = "roi") -> Roi:
        try:
            roi = cls(int(d["x"]), int(d["y"]), int(d["w"]), int(d["h"]))
        except (KeyError, TypeError, ValueError):
            raise BadInput(f"{where}: needs integer x, y, w, h, got {d!r}") from None
        if roi.w <= 0 or roi.h <= 0 or roi.x < 0 or roi.y < 0:
            raise BadInput(f"{where}: needs x, y ≥ 0 and w, h > 0, got {d!r}")
        return roi

    def to_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 H×W from gray, BGR or BGRA input (OpenCV's channel order)."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise BadInput(f"expected a gray or BGR image, got an array of shape {image.shape}")
    return _as_uint8(gray)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit pixels: 16-bit ones keep their high byte; anything else is refused."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    raise BadInput(f"expected 8-bit pixels, got {image.dtype}")


def crop(image: np.ndarray, roi: Roi | None) -> np.ndarray:
    """The ROI as a view (no copy); the whole frame when roi is None."""
    if roi is None:
        return image
    h, w = image.shape[:2]
    if roi.x + roi.w > w or roi.y + roi.h > h:
        raise BadInput(
            f"ROI x={roi.x} y={roi.y} w={roi.w} h={roi.h} does not fit in a {w}×{h} frame"
        )
    return image[roi.y : roi.y + roi.h, roi.x : roi.x + roi.w]


def to_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 (BGR) from gray, BGR or BGRA input; gray is repeated in all three."""
    if image.ndim == 3 and image.shape[2] == 3:
        bgr = image
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        bgr = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        bgr = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    else:
        raise BadInput(f"expected a gray or BGR image, got an array of shape {image.shape}")
    return _as_uint8(bgr)


def is_color(image: np.ndarray) -> bool:
    """True when an image holds colour: 3 or 4 channels that are not all equal."""
    if image.ndim != 3 or image.shape[2] < 3:
        return False
    b, g, r = image[:, :, 0], image[:, :, 1], image[:, :, 2]
    return not (np.array_equal(b, g) and np.array_equal(g, r))


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width): INTER_AREA to shrink (no aliasing), bilinear to enlarge.

    A gray shrink by a non-integer factor from a crop of ≥ 128×128 px takes `_area_shrink`, which
    gives OpenCV's INTER_AREA pixels bit for bit (same weights, same float32 order of sums, same
    round-half-even) in ~40% of the time: OpenCV's generic area path costs 120 µs for 224×320 →
    95×136 on the line PC, ours 46 µs (medians; 300×420 → 91×127: 202 vs 70 µs). Everything
    else stays with OpenCV: enlarging; integer factors (its fast path, ~4 µs); small crops (its
    ~5-20 µs beats our fixed cost); and BGR, where our path measured erratic (0.4× to 6× OpenCV's
    time, its float32 H×W×3 copies are big enough for the allocator to fault pages in per call).
    """
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    rows, cols = image.shape[:2]
    shrinking = rows >= h and cols >= w
    if not shrinking:
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    integer = rows % h == 0 and cols % w == 0
    if (
        image.ndim == 2
        and image.dtype == np.uint8
        and not integer
        and rows * cols >= _AREA_MIN_PIXELS
    ):
        return _area_shrink(image, h, w)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


_AREA_MIN_PIXELS = 128 * 128  # below this OpenCV's area path is as fast as ours (measured)


@lru_cache(maxsize=64)
def _area_weights(n_in: int, n_out: int) -> sparse.csr_array:
    """n_out×n_in INTER_AREA weights along one axis, as OpenCV's computeResizeAreaTab makes them.

    Output i averages input [i·s, (i+1)·s), s = n_in/n_out, partial pixels weighted by overlap;
    weights computed in double and stored as float32, in increasing source order (the order
    OpenCV sums them in, which csr @ dense keeps)."""
    scale = 1.0 / (n_out / n_in)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(math.ceil(f1), s2)
        taps = []
        if s1 - f1 > 1e-3:
            taps.append((s1 - 1, (s1 - f1) / cell))
        taps += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        for s, a in taps:
            rows.append(d)
            cols.append(s)
            vals.append(a)
    m = sparse.csr_array(
        (np.array(vals, np.float32), (rows, cols)), shape=(n_out, n_in), dtype=np.float32
    )
    m.sort_indices()
    return m


def _area_shrink(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """OpenCV's INTER_AREA shrink of a gray uint8 image, bit-exact, as two sparse products.

    OpenCV sums each source row horizontally (float32, taps in order), then sums those rows
    vertically (float32, in order) and rounds half to even; csr @ dense (scipy's csr_matvecs)
    accumulates y[i] += a·x[j] in the same order, so each pass is one product on the transposed
    image. cv2.transpose is the fast way to get the contiguous transposes."""
    rows, cols = image.shape
    across = _area_weights(cols, w) @ cv2.transpose(image).astype(np.float32)  # w×rows
    out = _area_weights(rows, h) @ cv2.transpose(across)  # h×w
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def placement(h: int, w: int, spec: InputSpec) -> tuple[int, int, int, int]:
    """Where an h×w input lands in the model input under `pad`: (y0, x0, rows, cols).

    The scale is the largest that fits both sides; the content is centred (odd spare pixels go
    to the bottom/right). For `crop` and `stretch` the content fills the whole input."""
    if spec.fit != "pad":
        return 0, 0, spec.height, spec.width
    s = min(spec.height / h, spec.width / w)
    rows = min(spec.height, max(1, round(h * s)))
    cols = min(spec.width, max(1, round(w * s)))
    return (spec.height - rows) // 2, (spec.width - cols) // 2, rows, cols


def crop_window(h: int, w: int, spec: InputSpec) -> tuple[int, int, int, int]:
    """The centred window of an h×w input with the model's aspect ratio: (y0, x0, rows, cols)."""
    target = spec.height / spec.width
    if h / w > target:  # too tall: cut rows
        rows = min(h, max(1, round(w * target)))
        return (h - rows) // 2, 0, rows, w
    cols = min(w, max(1, round(h / target)))
    return 0, (w - cols) // 2, h, cols


def fit(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """An image of any shape → exactly spec.height×spec.width, by the spec's fit."""
    h, w = image.shape[:2]
    if (h, w) == spec.size:
        return image
    if spec.fit == "stretch":
        return resize(image, spec.size)
    if spec.fit == "crop":
        y0, x0, rows, cols = crop_window(h, w, spec)
        return resize(image[y0 : y0 + rows, x0 : x0 + cols], spec.size)
    y0, x0, rows, cols = placement(h, w, spec)
    inner = resize(image, (rows, cols))
    if spec.pad_mode == "reflect":
        bottom, right = spec.height - rows - y0, spec.width - cols - x0
        out = cv2.copyMakeBorder(inner, y0, bottom, x0, right, cv2.BORDER_REFLECT_101)
        return out.reshape((*spec.size, *image.shape[2:]))
    out = np.full((*spec.size, *image.shape[2:]), spec.pad_value, np.uint8)
    out[y0 : y0 + rows, x0 : x0 + cols] = inner
    return out


def to_color(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The spec's colour: gray H×W, or BGR H×W×3."""
    return to_gray(image) if spec.channels == 1 else to_bgr(image)


def prepare(image: np.ndarray, spec: InputSpec, roi: Roi | None = None) -> np.ndarray:
    """Frame → uint8 model-sized patch (spec.patch_shape): crop, then colour, then fit.

    Cropping before the colour conversion gives the same pixels (conversion is per pixel) but
    converts only the ROI: ~7 µs instead of ~185 µs on a 1280×720 BGR camera frame.
    """
    return fit(to_color(crop(image, roi), spec), spec)


def to_tensor(patches: np.ndarray, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 N×H×W (gray) or N×H×W×3 (BGR) patches → float32 model input in the spec's layout.

    `out` lets the runtime reuse one buffer for every part instead of allocating per frame.
    """
    patches = np.asarray(patches)
    if patches.ndim == len(spec.patch_shape):
        patches = patches[None]
    n = patches.shape[0]
    if patches.shape[1:] != spec.patch_shape:
        want = "×".join(map(str, spec.patch_shape))
        raise BadInput(f"expected {want} patches, got {patches.shape[1:]}")
    shape = spec.tensor_shape(n)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    np.multiply(patches.reshape(shape), np.float32(spec.scale), out=out, casting="unsafe")
    return out


def preprocess(image: np.ndarray, spec: InputSpec, roi: Roi | None = None) -> np.ndarray:
    """One frame → float32 batch of one, ready for the embedding network."""
    return to_tensor(prepare(image, spec, roi), spec)
