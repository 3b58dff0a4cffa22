"""twinspect export: the embedding branch of a training run → model.onnx + model.json.

Uses TensorFlow and tf2onnx (the `train` extra). The sidecar is written through the runtime's own
schema (`edge_runtime.sidecar`), so export cannot write a file the line would read differently.
"""
