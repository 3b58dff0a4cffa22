"""Keras embedding branch → ONNX bytes with tf2onnx.

`tf2onnx.convert.from_keras` fails on Keras 3 Sequential models (tf2onnx issue #2448), so the
branch is wrapped in a `tf.function` with an explicit input signature and converted with
`from_function`: input named `image` with a dynamic batch, output named `embedding`.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.errors import MissingExtra
from edge_runtime.preprocess import InputSpec

DEFAULT_OPSET = 17


def to_onnx_bytes(embedding, spec: InputSpec, opset: int = DEFAULT_OPSET) -> bytes:
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError:
        raise MissingExtra("export", "train") from None

    signature = (tf.TensorSpec(spec.tensor_shape(None), tf.float32, name="image"),)

    @tf.function(input_signature=signature)
    def embed(image):
        return {"embedding": embedding(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(embed, input_signature=signature, opset=opset)
    return proto.SerializeToString()


def quantize_int8(onnx_bytes: bytes, calibration: np.ndarray) -> tuple[bytes, list[str]]:
    """Static int8 (onnxruntime.quantization): int8 weights per output channel, uint8
    activations whose ranges are calibrated on `calibration` (model inputs, one at a time) at
    their 99.99th percentile, in the QOperator format (QLinearConv). Everything after the last
    convolution (its ReLU aside, which the convolution absorbs) stays in float: returns the int8
    graph and the op types left in float there.

    Why static QOperator: dynamic quantization turns convolutions into ConvInteger, several
    times slower than fp32 here. The tile's four-view branch (120×136, 50 M multiply-adds a
    part), one thread: 730 µs a call against 965 µs fp32 (QDQ 794 µs; symmetric int8
    activations 951 µs). Why the percentile: the min/max ranges cost one seed 0.002 of test
    AUROC (0.9918 → 0.9898). Why a float head: in uint8 the global mean pool, the concat of the
    pooled features and the embedding's MatMul moved a part's score by a median 19–21% of the
    median score and cost one seed 0.0017 of test AUROC (0.9913 → 0.9896); in float they move
    it by 4–6%, every seed within 0.0008 of fp32, at the same speed (they are a few thousand
    multiply-adds against the convolutions' 50 million; docs/architecture-search.md)."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Inputs(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(np.ascontiguousarray(calibration, dtype=np.float32))

        def get_next(self) -> dict | None:
            row = next(self._rows, None)
            return None if row is None else {"image": row[None]}

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "pre", "int8"))
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        head = _after_last_conv(onnx.load(str(pre)).graph.node)
        quantize_static(
            str(pre),
            str(dst),
            _Inputs(),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.99},
            nodes_to_exclude=[n.name for n in head],
        )
        return dst.read_bytes(), sorted({n.op_type for n in head})


def _after_last_conv(nodes) -> list:
    """The graph's head: the nodes after its last convolution (in the graph's topological
    order), less the ReLU that follows a convolution and is fused into its QLinearConv."""
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        return []
    return [n for n in nodes[convs[-1] + 1 :] if n.op_type != "Relu"]
