"""The per-frame pipeline: preprocess → embed → score → verdict, with per-stage timing.

Built for single-part latency on a small CPU: the model input and output buffers are allocated
once and bound to the onnxruntime session through IOBinding (measured ~3 µs faster per call than
`session.run`, which allocates its output every time), preprocessing writes into the bound input
buffer, and scoring is the one shared scoring function. Offline sources can judge frames in
batches for throughput with the same buffers.

A frame that cannot be judged — wrong size for the ROI, blank (near-constant), not an image —
gives an ERROR verdict with the reason instead of an exception, so the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns
from typing import NamedTuple

import cv2
import numpy as np

from edge_runtime.errors import BadInput, TwinspectError
from edge_runtime.model import EmbeddingModel
from edge_runtime.preprocess import Roi, crop, placement, prepare, to_tensor
from edge_runtime.scoring import Prototype, nearest_types

BLANK_STD = 1.0  # gray levels: a part always has more contrast than this; a capped lens does not


@dataclass(slots=True)
class Judgement:
    """One frame's result. score is None exactly when verdict is ERROR."""

    verdict: str  # "OK", "NG", "NOVEL" (NG and like no known defect type) or "ERROR"
    score: float | None
    score_norm: float | None  # score / (2·threshold), clipped to [0, 1]: threshold ↦ 0.5
    reason: str | None
    pre_ns: int
    embed_ns: int = 0
    score_ns: int = 0
    batch: int = 1
    nearest: str | None = None  # the known defect type an NG part is nearest to
    type_distance: float | None = None  # distance to the known types in radii (> 1: NOVEL)

    @property
    def total_ns(self) -> int:
        return self.pre_ns + self.embed_ns + self.score_ns


class Verdict(NamedTuple):
    """What the line decides about one scored part, before timing and records are attached."""

    verdict: str  # "OK", "NG" or "NOVEL"
    nearest: str | None = None  # NG/NOVEL with prototypes: the nearest known defect type
    type_distance: float | None = None  # distance to the known types in radii (> 1: NOVEL)


def judge(
    score: float,
    threshold: float,
    embedding: np.ndarray | None,
    prototypes: dict[str, Prototype],
    novelty: float | None = None,
) -> Verdict:
    """The verdict of one scored part: NG above the threshold, then named after the nearest known
    defect type, and NOVEL when like none of them: outside every known kind's region of the
    fused score's terms when the model has them (`novelty`, in radii: scoring.Novelty), else
    outside every type's radius in embedding space.

    The one place this is decided, so that `twinspect eval` counts exactly the verdicts that
    `twinspect run` records for the same embeddings (eval's known/novel table is only worth
    reading if it is the line's own judgement). A NaN score is OK here as it always was on the
    line: `score > threshold` is false.
    """
    if not score > threshold:
        return Verdict("OK")
    named = (
        nearest_types(embedding, prototypes)[0] if prototypes and embedding is not None else None
    )
    if novelty is not None:
        return Verdict("NOVEL" if novelty > 1.0 else "NG", named and named[0], float(novelty))
    if named is None:
        return Verdict("NG")
    nearest, _, outside = named
    return Verdict("NOVEL" if outside > 1.0 else "NG", nearest, outside)


def normalize(score: float, threshold: float) -> float:
    """Map the threshold to 0.5 so one display scale fits every model."""
    if threshold <= 0:
        return 1.0 if score > threshold else 0.0
    return min(1.0, max(0.0, score / (2.0 * threshold)))


class Inspector:
    """Judge frames OK/NG against the model's reference, threshold and input spec."""

    def __init__(
        self,
        model: EmbeddingModel,
        roi: Roi | None = None,
        threshold: float | None = None,
        max_batch: int = 1,
        blank_std: float = BLANK_STD,
    ) -> None:
        if max_batch < 1:
            raise BadInput(f"--batch must be ≥ 1, got {max_batch}")
        self.model = model
        self.spec = model.spec
        self.roi = roi
        self.threshold = float(model.sidecar.threshold.value if threshold is None else threshold)
        self.threshold_from = "sidecar" if threshold is None else "cli"
        self.blank_std = blank_std
        self.max_batch = max_batch
        self._x = np.zeros(self.spec.tensor_shape(max_batch), dtype=np.float32)
        self._emb = np.zeros((max_batch, model.sidecar.embedding_dim), dtype=np.float32)
        self._bindings: dict[int, object] = {}

    # ------------------------------------------------------------------ stages
    def _binding(self, n: int):
        """An IOBinding of the first n rows of the preallocated buffers (made once per n)."""
        io = self._bindings.get(n)
        if io is None:
            import onnxruntime as ort

            sess = self.model.session
            io = sess.io_binding()
            sc = self.model.sidecar
            io.bind_ortvalue_input(sc.input_name, ort.OrtValue.ortvalue_from_numpy(self._x[:n]))
            io.bind_ortvalue_output(sc.output_name, ort.OrtValue.ortvalue_from_numpy(self._emb[:n]))
            self._bindings[n] = io
        return io

    def _embed(self, n: int) -> np.ndarray:
        """Embed rows [0, n) of the input buffer into rows [0, n) of the output buffer."""
        self.model.session.run_with_iobinding(self._binding(n))
        return self._emb[:n]

    def patch(self, image: np.ndarray) -> np.ndarray:
        """The one preprocessing path, plus the blank check; raises BadInput with the reason."""
        p = prepare(image, self.spec, self.roi)
        if self.blank_std > 0:
            y0, x0, rows, cols = placement(*crop(image, self.roi).shape[:2], self.spec)
            std = float(cv2.meanStdDev(p[y0 : y0 + rows, x0 : x0 + cols])[1].max())
            if std < self.blank_std:
                raise BadInput(f"blank frame (gray std {std:.2f} < {self.blank_std:g} in the ROI)")
        return p

    def _into(self, i: int, image: np.ndarray | None) -> Judgement | None:
        """Preprocess into input row i; an ERROR judgement if the frame cannot be judged."""
        t0 = perf_counter_ns()
        if image is None:
            return Judgement("ERROR", None, None, "no image", perf_counter_ns() - t0)
        try:
            to_tensor(self.patch(image), self.spec, out=self._x[i : i + 1])
        except TwinspectError as e:
            return Judgement("ERROR", None, None, str(e), perf_counter_ns() - t0)
        except cv2.error as e:  # e.g. a frame OpenCV cannot convert
            reason = str(e).strip().splitlines()[-1]
            return Judgement("ERROR", None, None, f"OpenCV: {reason}", perf_counter_ns() - t0)
        return Judgement("OK", None, None, None, perf_counter_ns() - t0)

    def _verdict(
        self, j: Judgement, score: float, emb: np.ndarray | None, novelty: float | None
    ) -> None:
        j.score = float(score)
        j.score_norm = normalize(j.score, self.threshold)
        j.verdict, j.nearest, j.type_distance = judge(
            j.score, self.threshold, emb, self.model.sidecar.prototypes, novelty
        )

    # ------------------------------------------------------------------ public
    def inspect(self, image: np.ndarray | None) -> Judgement:
        """One frame, batch of one: the latency path."""
        j = self._into(0, image)
        if j.verdict == "ERROR":
            return j
        t1 = perf_counter_ns()
        emb = self._embed(1)
        t2 = perf_counter_ns()
        scores, novelty = self.model.score_parts(emb, self._x[:1])
        t3 = perf_counter_ns()
        j.embed_ns, j.score_ns = t2 - t1, t3 - t2
        self._verdict(j, scores[0], emb[0], None if novelty is None else novelty[0])
        return j

    def inspect_many(self, images: list[np.ndarray | None]) -> list[Judgement]:
        """Frames judged up to max_batch at a time; embed/score time is shared out per frame."""
        out: list[Judgement] = []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            js: list[Judgement] = []
            rows: list[Judgement] = []
            for image in chunk:
                j = self._into(len(rows), image)
                js.append(j)
                if j.verdict != "ERROR":
                    rows.append(j)
            if rows:
                n = len(rows)
                t1 = perf_counter_ns()
                emb = self._embed(n)
                t2 = perf_counter_ns()
                scores, novelty = self.model.score_parts(emb, self._x[:n])
                t3 = perf_counter_ns()
                for k, (j, s) in enumerate(zip(rows, scores, strict=True)):
                    j.embed_ns, j.score_ns, j.batch = (t2 - t1) // n, (t3 - t2) // n, n
                    self._verdict(j, s, emb[k], None if novelty is None else novelty[k])
            out.extend(js)
        return out

    def score_patches(
        self,
        patches: np.ndarray,
        embeddings: np.ndarray | None = None,
        novelty: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores of already-prepared uint8 N×H×W patches (labeled data), in max_batch chunks.

        `embeddings` (N×D float32), when given, receives each patch's embedding: the bound
        output buffer is reused by the next chunk, so a caller that needs them must keep a copy.
        `novelty` (N floats), when given and the model has novelty regions, receives each
        patch's distance from the nearest in radii.
        """
        scores = np.empty(len(patches), dtype=np.float64)
        for start in range(0, len(patches), self.max_batch):
            chunk = patches[start : start + self.max_batch]
            n = len(chunk)
            to_tensor(chunk, self.spec, out=self._x[:n])
            emb = self._embed(n)
            scores[start : start + n], nov = self.model.score_parts(emb, self._x[:n])
            if embeddings is not None:
                embeddings[start : start + n] = emb
            if novelty is not None and nov is not None:
                novelty[start : start + n] = nov
        return scores

    def judge_patches(self, patches: np.ndarray) -> tuple[np.ndarray, list[Verdict]]:
        """Scores and the line's verdicts (OK/NG/NOVEL with the nearest known type) of
        already-prepared patches: what `run` would record for each, for eval to tabulate."""
        emb = np.empty((len(patches), self.model.sidecar.embedding_dim), dtype=np.float32)
        novelty = np.full(len(patches), np.nan)
        scores = self.score_patches(patches, emb, novelty)
        protos = self.model.sidecar.prototypes
        verdicts = [
            judge(float(s), self.threshold, e, protos, None if np.isnan(v) else float(v))
            for s, e, v in zip(scores, emb, novelty, strict=True)
        ]
        return scores, verdicts
