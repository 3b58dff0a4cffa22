"""A model directory on the line: model.onnx + model.json, checked before anything is opened.

`load_model_dir` refuses a bad pair with one BadModel line naming the file and the field, so a
line never starts judging parts with a model whose sidecar does not belong to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.errors import BadModel
from edge_runtime.files import sha256_file
from edge_runtime.preprocess import InputSpec
from edge_runtime.scoring import fusion_terms, part_scores
from edge_runtime.sidecar import Sidecar

SIDECAR_NAME = "model.json"


@dataclass(frozen=True)
class SessionOptions:
    """onnxruntime settings. One thread without spinning measures best for single parts and does
    not burn the other core of a shared mini PC; raise `threads` for large offline batches."""

    threads: int = 1
    spinning: bool = False


class EmbeddingModel:
    """The ONNX embedding branch plus its sidecar: embed and score parts."""

    def __init__(self, model_dir: Path, sidecar: Sidecar, session) -> None:
        self.model_dir = model_dir
        self.sidecar = sidecar
        self.session = session
        self.spec: InputSpec = sidecar.input
        self._input_name = sidecar.input_name
        self._outputs = [sidecar.output_name]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """float32 model input (spec layout) → N×D embeddings."""
        return self.session.run(self._outputs, {self._input_name: batch})[0]

    def score(self, embeddings: np.ndarray, tensors: np.ndarray | None) -> np.ndarray:
        """Each part's score: its embedding's distance to the sidecar's reference, plus the
        pixel residual of its model input when the sidecar fuses one (`tensors`, the batch the
        embeddings came from; None is enough for a model without fusion)."""
        sc = self.sidecar
        return part_scores(
            embeddings, tensors, sc.reference.vector, sc.metric, sc.fusion, self.spec
        )

    def score_parts(
        self, embeddings: np.ndarray, tensors: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, novelty): the scores of `score`, and with novelty regions (schema 5: one;
        6: one per known kind) each part's distance from the nearest in radii (> 1: a reject
        is NOVEL) from the same two terms — one residual pass for both."""
        sc = self.sidecar
        fusion = sc.fusion
        if fusion is None or fusion.novelty is None:
            return self.score(embeddings, tensors), None
        terms = fusion_terms(embeddings, tensors, sc.reference.vector, sc.metric, fusion, self.spec)
        return terms.sum(axis=1), fusion.novelty.distance(terms)

    @property
    def residual(self):
        """The fused pixel residual (edge_runtime.residual.Residual), or None."""
        return None if self.sidecar.fusion is None else self.sidecar.fusion.residual

    def score_batch(self, tensors: np.ndarray) -> np.ndarray:
        """Embed and score a batch of model inputs."""
        return self.score(self.embed(tensors), tensors)


def _session(onnx_path: Path, opts: SessionOptions):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(opts.threads))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.spinning else "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadModel(f"{onnx_path}: onnxruntime cannot load it ({first})") from None


def _check_shapes(session, sidecar: Sidecar, onnx_path: Path) -> None:
    ins, outs = session.get_inputs(), session.get_outputs()
    if len(ins) != 1 or ins[0].name != sidecar.input_name:
        names = [i.name for i in ins]
        raise BadModel(f"{onnx_path}: inputs {names} do not match input.name in the sidecar")
    expected_in = sidecar.input.tensor_shape()[1:]
    got_in = tuple(ins[0].shape[1:])
    if got_in != expected_in:
        raise BadModel(
            f"{onnx_path}: input shape {list(ins[0].shape)} does not match the sidecar's "
            f"input (N×{'×'.join(map(str, expected_in))})"
        )
    out = next((o for o in outs if o.name == sidecar.output_name), None)
    if out is None:
        raise BadModel(f"{onnx_path}: no output named {sidecar.output_name!r}")
    if out.shape[-1] != sidecar.embedding_dim:
        raise BadModel(
            f"{onnx_path}: output shape {list(out.shape)} does not match the sidecar's "
            f"output.dim {sidecar.embedding_dim}"
        )


def load_model_dir(model_dir: str | Path, options: SessionOptions | None = None) -> EmbeddingModel:
    """Check and load a model directory; raise BadModel (exit 2) on any mismatch."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BadModel(f"{model_dir}: not a model directory (expected model.onnx + model.json)")
    sidecar = Sidecar.load(model_dir / SIDECAR_NAME)
    onnx_path = model_dir / sidecar.model_file
    if not onnx_path.is_file():
        raise BadModel(f"{onnx_path}: missing (named by model_file in {SIDECAR_NAME})")
    digest = sha256_file(onnx_path)
    if digest != sidecar.model_sha256:
        raise BadModel(
            f"{onnx_path}: SHA-256 {digest[:12]}… does not match model_sha256 "
            f"{sidecar.model_sha256[:12]}… in {model_dir / SIDECAR_NAME}; "
            "the sidecar belongs to another model"
        )
    session = _session(onnx_path, options or SessionOptions())
    _check_shapes(session, sidecar, onnx_path)
    return EmbeddingModel(model_dir, sidecar, session)
