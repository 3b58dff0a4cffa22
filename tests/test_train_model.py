"""The twin network pieces: contrastive loss by hand, the distance layer, save/load safe_mode."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train.model import (  # noqa: E402
    ARCHS,
    EMBEDDING_DIM,
    ContrastiveLoss,
    EuclideanDistance,
    build_embedding,
    build_twin,
    input_spec,
    load_model,
    with_views,
)


def test_contrastive_loss_matches_hand_computed_values():
    # y = 0 (same kind): (1 − y)/2 · d²;  y = 1 (different): y/2 · max(0, 1 − d)²
    d = np.array([[0.5], [0.5], [1.5], [0.2], [0.0]], np.float32)
    y = np.array([0, 1, 1, 0, 1], np.float32)
    per_pair = [0.5 * 0.25, 0.5 * 0.25, 0.0, 0.5 * 0.04, 0.5 * 1.0]
    loss = ContrastiveLoss(margin=1.0, reduction=None)
    got = np.asarray(loss(y, d)).ravel()
    assert np.allclose(got, per_pair, atol=1e-7)
    mean = float(ContrastiveLoss()(y, d))
    assert mean == pytest.approx(np.mean(per_pair), abs=1e-7)
    assert float(ContrastiveLoss()(y.reshape(-1, 1), d)) == pytest.approx(mean, abs=1e-7)


def test_contrastive_loss_margin_is_configurable_and_serialised():
    loss = ContrastiveLoss(margin=2.0, reduction=None)
    got = np.asarray(loss(np.array([1.0], np.float32), np.array([[0.5]], np.float32)))
    assert got.ravel()[0] == pytest.approx(0.5 * 1.5**2)
    assert ContrastiveLoss.from_config(loss.get_config()).margin == 2.0


def test_euclidean_distance_is_epsilon_guarded():
    a = np.array([[3.0, 4.0], [1.0, 1.0]], np.float32)
    b = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    layer = EuclideanDistance()
    d = np.asarray(layer([a, b])).ravel()
    assert d[0] == pytest.approx(5.0)
    assert d[1] == pytest.approx(np.sqrt(1e-7), rel=1e-3)  # floored, not 0
    import tensorflow as tf

    ta, tb = tf.Variable(b), tf.constant(b)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(layer([ta, tb]))
    assert np.all(np.isfinite(tape.gradient(out, ta).numpy()))


@pytest.mark.parametrize("arch", ARCHS)
def test_embedding_shapes_and_reference_mlp(arch):
    spec = input_spec(arch)
    emb = build_embedding(arch, spec, seed=0)
    assert emb.inputs[0].name.startswith("image") or emb.input_names == ["image"]
    assert emb.get_layer("embedding").units == EMBEDDING_DIM
    x = np.zeros((2, *spec.tensor_shape()[1:]), np.float32)
    assert emb.predict(x, verbose=0).shape == (2, EMBEDDING_DIM)
    if arch == "mlp":
        dense = [layer for layer in emb.layers if isinstance(layer, keras.layers.Dense)]
        assert [d.units for d in dense] == [512, 256, 128]
        assert [d.activation.__name__ for d in dense] == ["relu", "relu", "linear"]
        assert spec.tensor_shape() == (None, 936)


def test_twin_saves_and_loads_with_safe_mode(tmp_path):
    spec = input_spec("mlp")
    twin = build_twin(build_embedding("mlp", spec, seed=1))
    twin.compile(optimizer="sgd", loss=ContrastiveLoss())
    rng = np.random.default_rng(0)
    a, b = rng.random((4, 936), np.float32), rng.random((4, 936), np.float32)
    expected = twin.predict([a, b], verbose=0)
    path = tmp_path / "twin.keras"
    twin.save(path)
    config = path.read_bytes()
    assert b"Lambda" not in config
    loaded = load_model(path)  # safe_mode=True, no custom_objects
    assert any(isinstance(layer, EuclideanDistance) for layer in loaded.layers)
    assert np.allclose(loaded.predict([a, b], verbose=0), expected, atol=1e-6)
    again = keras.saving.load_model(path, safe_mode=True)
    assert np.allclose(again.predict([a, b], verbose=0), expected, atol=1e-6)


@pytest.mark.parametrize("n", [2, 4])
def test_mirror_views_embed_the_mirrors_side_by_side_through_save_and_onnx(tmp_path, n):
    """--views 2 / 4: the shipped branch holds the part's mirror embeddings side by side (the
    part and the part turned half a turn; or all four mirrors), in Keras, after a safe_mode
    save/load, and in onnxruntime (the line's path)."""
    import onnxruntime as ort

    from edge_runtime.preprocess import InputSpec
    from export.onnx_convert import to_onnx_bytes

    spec = InputSpec(height=64, width=72, layout="nhwc")
    single = build_embedding("cnn", spec, seed=3)
    views = with_views(single, n)
    x = np.random.default_rng(0).random((3, 64, 72, 1)).astype(np.float32)
    mirrors = {2: [x, x[:, ::-1, ::-1]], 4: [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]}[n]
    expected = np.hstack([single.predict(np.ascontiguousarray(m), verbose=0) for m in mirrors])
    assert np.allclose(views.predict(x, verbose=0), expected, atol=1e-5)
    first, mirrored = expected[:, :EMBEDDING_DIM], expected[:, EMBEDDING_DIM : 2 * EMBEDDING_DIM]
    assert np.allclose(first, single.predict(x, verbose=0), atol=1e-5)
    assert not np.allclose(first, mirrored, atol=1e-3)  # the views differ
    views.save(tmp_path / "v.keras")
    assert np.allclose(load_model(tmp_path / "v.keras").predict(x, verbose=0), expected, atol=1e-5)
    sess = ort.InferenceSession(to_onnx_bytes(views, spec), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(None, {"image": x})
    assert onnx_out.shape == (3, n * EMBEDDING_DIM)
    assert np.allclose(onnx_out, expected, atol=1e-5)
    assert with_views(single, 1) is single
    with pytest.raises(ValueError, match="views must be 1, 2 or 4"):
        with_views(single, 3)


def test_weight_average_ships_the_mean_of_the_last_epochs():
    from train.fit import WeightAverage

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()]
    )
    shapes = [w.shape for w in model.get_weights()]
    average = WeightAverage(epochs=5, last=3)
    for epoch in range(5):  # epoch e's weights all equal e: the last three average to 3
        model.set_weights([np.full(s, float(epoch), np.float32) for s in shapes])
        average.add(epoch, model)
    average.apply(model)
    assert average.n == 3
    assert all(np.allclose(w, 3.0) and w.dtype == np.float32 for w in model.get_weights())

    last_only = WeightAverage(epochs=5, last=1)  # 1 or 0: the last epoch's weights, untouched
    model.set_weights([np.full(s, 9.0, np.float32) for s in shapes])
    last_only.add(4, model)
    last_only.apply(model)
    assert last_only.n == 0 and all(np.allclose(w, 9.0) for w in model.get_weights())


def test_weights_are_averaged_by_default_for_the_scaled_network_only():
    from edge_runtime.preprocess import InputSpec
    from train.fit import TrainConfig, average_last_default, is_scaled

    cfg = TrainConfig(data="unused", out="unused")
    small, large = input_spec("cnn", (26, 36)), input_spec("cnn", (120, 136))
    assert not is_scaled(cfg, small) and is_scaled(cfg, large)
    assert average_last_default(cfg, is_scaled(cfg, large)) == cfg.epochs // 3 == 10
    assert average_last_default(cfg, is_scaled(cfg, small)) == 0
    asked = TrainConfig(data="unused", out="unused", average_last=4)
    assert average_last_default(asked, True) == average_last_default(asked, False) == 4
    assert not is_scaled(TrainConfig(data="u", out="u", arch="mlp"), InputSpec(120, 136))
