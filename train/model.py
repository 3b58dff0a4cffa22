"""The twin network: an embedding branch shared by both images of a pair, and their distance.

Pair-label convention (the reference notebook's, used everywhere in twinspect):
    y = 0  same kind   (good, good)      → the distance should be small
    y = 1  different   (good, defective) → the distance should be at least the margin
    contrastive loss = (1 − y)/2 · d²  +  y/2 · max(0, margin − d)²,   margin = 1
"""

from __future__ import annotations

import math

from edge_runtime.errors import BadInput
from edge_runtime.geometry import MIN_SIDE  # auto never picks less; smaller inputs are refused
from edge_runtime.preprocess import InputSpec
from train import require_keras

keras = require_keras()
from keras import layers, ops  # noqa: E402

ARCHS = ("mlp", "cnn")
EMBEDDING_DIM = 128
# cnn branch for small inputs (both sides ≤ SMALL_MAX_SIDE, e.g. the default 26×36): conv widths,
# and no hidden dense layer — the 6×9×32 feature map goes straight into the linear embedding.
# Chosen by a measured search (docs/architecture-search.md): a hidden Dense(256) after slim convs
# cost accuracy, wider convs cost latency (7.5 M → 1.9 M multiply-adds, ~36 µs).
CNN_CHANNELS = (16, 32, 32)
SMALL_MAX_SIDE = 48
# cnn branch for larger inputs: a stride-2 stem, then pool + conv stages until the feature map is
# at most FEATURE_SIDE on its short side, then global max and mean pooling side by side. The
# max keeps a defect a few pixels wide from being averaged away (local evidence); the mean
# carries the part's overall look. Cost grows with the input area, not with a flattened map.
STEM_CHANNELS = 16
STAGE_CHANNELS = (32, 64, 64, 64, 64)
FEATURE_SIDE = 8


@keras.saving.register_keras_serializable(package="twinspect")
class EuclideanDistance(layers.Layer):
    """‖a − b‖₂ per row, with the squared sum floored at epsilon so the gradient of the square
    root stays finite when both branches give the same embedding."""

    def __init__(self, epsilon: float = 1e-7, **kwargs) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        a, b = inputs
        squared = ops.sum(ops.square(a - b), axis=1, keepdims=True)
        return ops.sqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="twinspect")
class MirrorViews(layers.Layer):
    """N×H×W×C → vN×H×W×C: the parts as they are and mirrored, stacked along the batch so the
    branch embeds every view in one pass. 4 views: as they are, mirrored left/right,
    top/bottom and both; 2 views: as they are and mirrored both ways (turned half a turn).

    Mirrored by negative-step slices, which tf2onnx turns into ONNX Slice: the 4-view branch at
    120×136 runs in 4.1× the single view's time on one thread, against 5.7× with `ops.flip`
    (ReverseSequence in ONNX) and 5.0× with gathers (scratch measurement, 2026-11-29). Reversing
    the columns of a gray image is the slow slice (35 µs at 120×136 in onnxruntime, reversing
    its rows 6 µs), so it is done once: both-ways is the left/right mirror's rows reversed."""

    def __init__(self, views: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.views = views

    def call(self, x):
        h = x[:, :, ::-1]
        if self.views == 2:
            return ops.concatenate([x, h[:, ::-1]], axis=0)
        return ops.concatenate([x, h, x[:, ::-1], h[:, ::-1]], axis=0)

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        return (None if n is None else self.views * n, *input_shape[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="twinspect")
class ViewConcat(layers.Layer):
    """vN×D → N×vD: each part's view embeddings side by side (MirrorViews' order), so the
    distance to the reference (the good parts' views, side by side) pools the views' distances
    instead of the views being averaged first."""

    def __init__(self, views: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.views = views

    def call(self, x):  # one transpose: the slices and concat it replaces cost ~25 µs in ORT
        v = ops.transpose(ops.reshape(x, (self.views, -1, x.shape[-1])), (1, 0, 2))
        return ops.reshape(v, (-1, self.views * x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (None, self.views * input_shape[-1])

    def get_config(self) -> dict:
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="twinspect")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss with the convention in this module's docstring."""

    def __init__(self, margin: float = 1.0, name: str = "contrastive_loss", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.margin = margin

    def call(self, y_true, y_pred):
        d = y_pred
        y = ops.reshape(ops.cast(y_true, d.dtype), ops.shape(d))  # (N,) or (N, 1) labels
        same = (1.0 - y) / 2.0 * ops.square(d)
        different = y / 2.0 * ops.square(ops.maximum(self.margin - d, 0.0))
        return same + different

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin}


def input_spec(
    arch: str,
    size: tuple[int, int] = (26, 36),
    channels: int = 1,
    fit: str = "pad",
) -> InputSpec:
    """The input each architecture takes: flat H·W·C values for the MLP, N×H×W×C for the CNN."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}")
    if arch == "cnn" and min(size) < MIN_SIDE:
        raise BadInput(
            f"--input-size {size[0]}x{size[1]} is too small for the cnn network "
            f"(needs at least {MIN_SIDE} px on each side)"
        )
    return InputSpec(
        height=size[0],
        width=size[1],
        channels=channels,
        layout="flat" if arch == "mlp" else "nhwc",
        fit=fit,
    )


def cnn_plan(spec: InputSpec) -> dict:
    """The cnn layers for an input size: 'small' (the measured 26×36 design) or 'scaled'."""
    if max(spec.size) <= SMALL_MAX_SIDE:
        return {"design": "small", "convs": list(CNN_CHANNELS)}
    side, stages = math.ceil(min(spec.size) / 2), []  # after the stride-2 stem
    while side > FEATURE_SIDE and len(stages) < len(STAGE_CHANNELS):
        stages.append(STAGE_CHANNELS[len(stages)])
        side = math.ceil(side / 2)
    return {"design": "scaled", "stem": STEM_CHANNELS, "convs": stages}


def build_embedding(arch: str = "mlp", spec: InputSpec | None = None, seed: int = 0):
    """The branch that is shipped. Functional (not Sequential) so tf2onnx can convert it."""
    spec = spec or input_spec(arch)
    init = keras.initializers.GlorotUniform
    inp = keras.Input(shape=spec.tensor_shape()[1:], name="image")
    if arch == "mlp":
        x = layers.Dense(512, activation="relu", kernel_initializer=init(seed))(inp)
        x = layers.Dense(256, activation="relu", kernel_initializer=init(seed + 1))(x)
    elif arch == "cnn" and cnn_plan(spec)["design"] == "small":
        c1, c2, c3 = CNN_CHANNELS
        x = inp
        for i, c in enumerate((c1, c2)):
            x = layers.Conv2D(
                c, 3, padding="same", activation="relu", kernel_initializer=init(seed + i)
            )(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(
            c3, 3, padding="same", activation="relu", kernel_initializer=init(seed + 2)
        )(x)
        x = layers.Flatten()(x)
    elif arch == "cnn":
        plan = cnn_plan(spec)

        def conv(x, c, i, strides=1):
            """conv → batch norm → relu: normalisation lets a few hundred parts train a deeper
            branch in a few thousand steps (without it the scaled branch barely moved)."""
            x = layers.Conv2D(
                c, 3, strides=strides, padding="same", use_bias=False,
                kernel_initializer=init(seed + i),
            )(x)  # fmt: skip
            return layers.Activation("relu")(layers.BatchNormalization()(x))

        x = conv(inp, plan["stem"], 0, strides=2)
        for i, c in enumerate(plan["convs"]):
            x = layers.MaxPooling2D(2, padding="same")(x)
            x = conv(x, c, 1 + i)
        peak, mean = layers.GlobalMaxPooling2D()(x), layers.GlobalAveragePooling2D()(x)
        x = layers.Concatenate()([peak, mean])
    else:
        raise ValueError(f"unknown arch {arch!r}")
    out = layers.Dense(EMBEDDING_DIM, name="embedding", kernel_initializer=init(seed + 7))(x)
    return keras.Model(inp, out, name=f"embedding_{arch}")


def with_views(embedding, views: int):
    """The shipped branch: with views=4, the embeddings of the part and its three mirror images
    side by side. Applied after training (the twin trains on single views), it averages out what
    one view of a textured part gets wrong. Each view is compared with the same view of the good
    parts, and p4 over the four side by side pools the four views' distances.

    Tile product, the five seeds' networks (post hoc, test AUROC): one view 0.977–0.989; the
    mean of the four embeddings 0.989–0.993 (two seeds under 0.99); the four side by side
    0.9916–0.9940. It costs about 4× the branch's work per part, and it breaks oriented parts —
    a mirrored terminal is not a terminal (default line 0.9997 → 0.89) — so `--views auto`
    (train.fit.choose_views) ships it only where the validation parts say it helps."""
    if views == 1:
        return embedding
    if views not in (2, 4):
        raise ValueError(f"views must be 1, 2 or 4, got {views}")
    inp = keras.Input(shape=tuple(embedding.inputs[0].shape[1:]), name="image")
    views_in = MirrorViews(views, name="mirror_views")(inp)
    out = ViewConcat(views, name="embedding")(embedding(views_in))
    return keras.Model(inp, out, name=f"{embedding.name}_views{views}")


def build_twin(embedding):
    """Two inputs, one shared embedding branch, their Euclidean distance."""
    shape = embedding.input_shape[1:] if hasattr(embedding, "input_shape") else None
    shape = shape or tuple(embedding.inputs[0].shape[1:])
    left = keras.Input(shape=shape, name="left")
    right = keras.Input(shape=shape, name="right")
    d = EuclideanDistance(name="distance")([embedding(left), embedding(right)])
    return keras.Model([left, right], d, name="twin")


def load_model(path):
    """Load a saved twin or embedding with safe_mode on; our layers are registered above."""
    return keras.saving.load_model(path, safe_mode=True)
