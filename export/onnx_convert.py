"""Keras embedding branch → ONNX bytes with tf2onnx.

`tf2onnx.convert.from_keras` fails on Keras 3 Sequential models (tf2onnx issue #2448), so the
branch is wrapped in a `tf.function` with an explicit input signature and converted with
`from_function`: input named `image` with a dynamic batch, output named `embedding`.
"""

from __future__ import annotations

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


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic int8 quantization of the weights (onnxruntime.quantization)."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return dst.read_bytes()
