"""Local pixel evidence: how unlike a good part the worst small window of a part is.

A PCA of the good parts' model inputs (on a grid of at most MAX_PIXELS, the input area-averaged
down when it is larger) says what good parts can look like; a part's residual is what the good
subspace cannot rebuild. The score is the *largest* mean squared residual over WINDOW×WINDOW
windows, not the residual's total: a defect a few pixels wide moves a handful of pixels, which a
sum over the whole part dilutes into the noise of every other pixel.

Why it exists beside the twin's embedding: the embedding learns the defect kinds it is shown and
can be blind to a kind it was not; the residual needs no defect at all. Measured on the default
line, each defect type held out of training in turn (scratch experiments on the stop-13
hold-out networks; BENCHMARKS.md has the shipped figures): unseen-type AUROC of the embedding's
p4 distance mean 0.947 (worst 0.849, scratches), global PCA reconstruction 0.990 (0.955), this
local residual 0.9997 (0.9993), the fused score (scoring.Fusion) 0.9997 (0.9992) with the known
kinds at 0.9999. On the textured tile product the local residual alone reached only 0.89–0.91
(global PCA 0.73) and fusing it moved AUROC by −0.003 to +0.006 depending on the seed — which is
why training votes on it per line (train/score_choice.py) instead of always fusing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.errors import BadInput
from edge_runtime.preprocess import InputSpec

MAX_PIXELS = 1024  # residual grid cells; bounds the sidecar (≤ MAX_PIXELS·MAX_COMPONENTS numbers)
MAX_COMPONENTS = 128
VARIANCE = 0.99  # the good subspace keeps this share of the good parts' pixel variance
WINDOW = 3  # residual windows, in grid cells (measured: 3 ≥ 5 ≫ whole part)


def grid_size(spec: InputSpec, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(h, w) of the residual grid: the model input, shrunk with its aspect kept to ≤ max_pixels
    cells."""
    h, w = spec.height, spec.width
    if h * w <= max_pixels:
        return h, w
    f = (max_pixels / (h * w)) ** 0.5
    return max(WINDOW, int(h * f)), max(WINDOW, int(w * f))


@dataclass(frozen=True)
class Residual:
    """The good parts' pixel subspace on an h×w×c grid: its mean and orthonormal components."""

    height: int
    width: int
    channels: int
    mean: np.ndarray  # P = h·w·c
    components: np.ndarray  # k×P, orthonormal rows
    window: int = WINDOW

    def __post_init__(self) -> None:
        p = self.height * self.width * self.channels
        if self.mean.shape != (p,) or self.components.ndim != 2 or self.components.shape[1] != p:
            raise BadInput(
                f"residual: mean {self.mean.shape} and components {self.components.shape} do "
                f"not fit a {self.height}×{self.width}×{self.channels} grid"
            )
        if not 1 <= self.window <= min(self.height, self.width):
            raise BadInput(f"residual: window {self.window} does not fit the grid")
        # float32 copies for the line: half the cost of float64 per part (measured 12 vs 25 µs
        # for the two products at 936 × 114), and the residual needs no more precision
        object.__setattr__(self, "_mean32", np.asarray(self.mean, dtype=np.float32))
        object.__setattr__(self, "_c32", np.asarray(self.components, dtype=np.float32))
        object.__setattr__(self, "_ct32", np.ascontiguousarray(self._c32.T))

    def grid(self, tensors: np.ndarray, spec: InputSpec) -> np.ndarray:
        """Model inputs (the spec's layout) → N×P float32 on the residual grid."""
        n = len(tensors)
        x = np.asarray(tensors, dtype=np.float32).reshape(n, spec.height, spec.width, -1)
        if (spec.height, spec.width) != (self.height, self.width):
            size = (self.width, self.height)
            x = np.stack([cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in x])
        return x.reshape(n, -1)

    def rebuild(self, tensors: np.ndarray, spec: InputSpec) -> np.ndarray:
        """N×h×w×c: each part as the good subspace rebuilds it — what it would look like without
        what makes it unusual (the heatmap hides a hot region with this)."""
        xc = self.grid(tensors, spec) - self._mean32
        rec = (xc @ self._ct32) @ self._c32 + self._mean32
        return rec.reshape(len(rec), self.height, self.width, self.channels)

    def cell_maps(self, tensors: np.ndarray, spec: InputSpec) -> np.ndarray:
        """N×h×w squared residual of each grid cell (channels summed): the heatmap's map. Its
        peak points at the defect more precisely than the windows' (`python -m train.pointing`,
        default line: bent tongues 67 of 80 peaks on the mask against 62, scratches 79 against
        76 of 79; the other kinds 79/79 either way)."""
        xc = self.grid(tensors, spec) - self._mean32
        r = xc - (xc @ self._ct32) @ self._c32
        r2 = (r * r).reshape(len(r), self.height, self.width, self.channels)
        return r2[..., 0] if self.channels == 1 else r2.sum(axis=3)

    def maps(self, tensors: np.ndarray, spec: InputSpec) -> np.ndarray:
        """N×h×w mean squared residual over each cell's window (border windows reflect): the
        score's map — a window is less swayed by one noisy pixel than a cell."""
        return self.windows(self.cell_maps(tensors, spec))

    def windows(self, r2: np.ndarray) -> np.ndarray:
        """Cell maps (N×h×w) → their WINDOW×WINDOW means."""
        out = np.empty_like(r2)
        for i, a in enumerate(r2):
            cv2.blur(a, (self.window, self.window), dst=out[i])
        return out

    def scores(self, tensors: np.ndarray, spec: InputSpec) -> np.ndarray:
        """One score per part: its worst window's residual (float64)."""
        m = self.maps(tensors, spec)
        return m.reshape(len(m), -1).max(axis=1).astype(np.float64)

    def to_dict(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "window": self.window,
            "mean": [float(f"{v:.6g}") for v in self.mean],
            "components": [[float(f"{v:.6g}") for v in row] for row in self.components],
        }


def fit_residual(good_tensors: np.ndarray, spec: InputSpec) -> Residual:
    """The PCA of good parts' inputs: the fewest components holding VARIANCE of their variance,
    at most MAX_COMPONENTS and fewer than the parts (so a part is never rebuilt by itself)."""
    h, w = grid_size(spec)
    probe = Residual(
        h, w, spec.channels, np.zeros(h * w * spec.channels), np.zeros((1, h * w * spec.channels))
    )
    x = probe.grid(good_tensors, spec).astype(np.float64)
    if len(x) < 3:
        raise BadInput(f"the pixel residual needs at least 3 good images, got {len(x)}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s * s
    if var.sum() <= 0:
        raise BadInput("all good training images are identical; the pixel residual needs variation")
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), VARIANCE) + 1)
    k = max(1, min(k, MAX_COMPONENTS, len(x) - 1))
    return Residual(h, w, spec.channels, mean, vt[:k].copy())
