"""fold_batch_norms: exact folding in the graph, in Keras and in LiteRT."""

import os

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress import fusion
from tests import helpers

L = keras.layers

# kind -> (layer maker, input shape)
FOLDABLE = {
    "conv2d": (lambda: L.Conv2D(6, 3, padding="same"), (7, 7, 3)),
    "conv2d_no_bias": (lambda: L.Conv2D(6, 3, use_bias=False), (7, 7, 3)),
    "conv1d": (lambda: L.Conv1D(6, 3, padding="causal"), (9, 4)),
    "depthwise": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (7, 7, 3)),
    "separable": (lambda: L.SeparableConv2D(6, 3), (7, 7, 3)),
    "transpose": (lambda: L.Conv2DTranspose(6, 3, strides=2), (5, 5, 3)),
    "transpose_1d": (lambda: L.Conv1DTranspose(6, 3, strides=2), (5, 3)),
    "transpose_3d": (lambda: L.Conv3DTranspose(6, 2, strides=2), (3, 3, 3, 2)),
    "conv3d": (lambda: L.Conv3D(6, 2, use_bias=False), (4, 4, 4, 2)),
    "depthwise_1d": (
        lambda: L.DepthwiseConv1D(3, depth_multiplier=2),
        (9, 3),
    ),
    "dense": (lambda: L.Dense(6), (5,)),
    "dense_no_bias": (lambda: L.Dense(6, use_bias=False), (5,)),
}


def _random_batch_norm_stats(model, seed=0):
    """Gives every BatchNorm non-trivial gamma, beta and moving stats."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, L.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.gamma.assign(rng.uniform(0.5, 2.0, shape))
            layer.beta.assign(rng.normal(size=shape))
            layer.moving_mean.assign(rng.normal(size=shape))
            layer.moving_variance.assign(rng.uniform(0.1, 3.0, shape))
    return model


def _batch_norms(model):
    return [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, L.BatchNormalization)
    ]


def _data(shape, n=8):
    return np.random.default_rng(1).normal(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("kind", sorted(FOLDABLE))
def test_folded_model_equals_original_in_inference(kind):
    make, shape = FOLDABLE[kind]
    inputs = keras.Input(shape)
    x = make()(inputs)
    x = L.BatchNormalization()(x)
    outputs = L.ReLU()(x)
    model = _random_batch_norm_stats(keras.Model(inputs, outputs))
    weights_before = [w.copy() for w in model.get_weights()]
    x = _data(shape)

    folded, report = fusion.fold_batch_norms(model, return_report=True)

    np.testing.assert_allclose(
        folded.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    assert not _batch_norms(folded)
    assert len(report.folded) == 1 and not report.kept
    # The original model is unchanged: same layers, same weights.
    assert len(_batch_norms(model)) == 1
    for before, after in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # The layer it folded into gained a bias; the BN became an Identity.
    layer = folded.get_layer(report.folded[0][1])
    assert layer.use_bias
    assert isinstance(folded.get_layer(report.folded[0][0]), L.Identity)


def _cnn_with_batch_norms():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Conv2D(8, 3, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.DepthwiseConv2D(3),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(16),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dense(4),
        ]
    )
    return _random_batch_norm_stats(model)


def test_litert_file_of_folded_model_matches_and_has_no_mul_or_add():
    model = _cnn_with_batch_norms()
    x = _data((12, 12, 3), n=16)
    folded = fusion.fold_batch_norms(model)
    expected = model.predict(x, verbose=0)

    blob = kc.convert.to_tflite(folded, "float32")
    np.testing.assert_allclose(
        kc.convert.run_tflite(blob, x), expected, rtol=1e-5, atol=1e-5
    )
    ops = [op.op_name for op in kc.convert.op_details(blob)]
    assert ops.count("CONV_2D") == 1 and ops.count("DEPTHWISE_CONV_2D") == 1
    assert not {"MUL", "ADD"} & set(ops), ops
    # The LiteRT converter folds these BatchNorms on its own too: both files
    # run the same ops (the folding pays in Keras and other runtimes).
    original = kc.convert.to_tflite(model, "float32")
    assert [op.op_name for op in kc.convert.op_details(original)] == ops


def test_batch_norms_that_cannot_be_folded_are_kept_with_a_reason():
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, name="conv_a")(inputs)
    b = L.Conv2D(4, 3, name="conv_b")(inputs)
    added = L.Add(name="add")([a, b])
    after_add = L.BatchNormalization(name="bn_after_add")(added)
    shared_out = L.Conv2D(4, 1, name="conv_shared_out")(after_add)
    bn_shared = L.BatchNormalization(name="bn_shared_out")(shared_out)
    relu_conv = L.Conv2D(4, 1, activation="relu", name="conv_relu")(bn_shared)
    bn_relu = L.BatchNormalization(name="bn_after_relu")(relu_conv)
    merged = L.Concatenate()([bn_relu, shared_out])
    x = L.Conv2D(4, 1, name="conv_ok")(merged)
    outputs = L.BatchNormalization(name="bn_ok")(x)
    model = _random_batch_norm_stats(keras.Model(inputs, outputs))
    x = _data((6, 6, 3))

    folded, report = fusion.fold_batch_norms(model, return_report=True)

    assert report.folded == (("bn_ok", "conv_ok"),)
    kept = dict(report.kept)
    assert set(kept) == {"bn_after_add", "bn_shared_out", "bn_after_relu"}
    assert "Add" in kept["bn_after_add"]
    assert "conv_shared_out" in kept["bn_shared_out"]
    assert "also used by" in kept["bn_shared_out"]
    assert "activation" in kept["bn_after_relu"]
    assert {layer.name for layer in _batch_norms(folded)} == set(kept)
    np.testing.assert_allclose(
        folded.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    # Without return_report the kept ones are named in a warning.
    with pytest.warns(UserWarning, match="bn_after_add"):
        fusion.fold_batch_norms(model)


def test_nested_models():
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            L.Dense(8, name="inner_fc"),
            L.BatchNormalization(),
        ],
        name="block",
    )
    sub = helpers.SubclassedMLP(units=8, num_classes=3, name="sub")
    inputs = keras.Input((8,))
    x = inner(inputs)
    x = L.BatchNormalization(name="bn_after_block")(x)
    outputs = sub(x)
    model = keras.Model(inputs, outputs)
    _random_batch_norm_stats(model)
    x = _data((8,))

    folded, report = fusion.fold_batch_norms(model, return_report=True)

    assert [pair[1] for pair in report.folded] == ["block/inner_fc"]
    assert "nested model 'block'" in dict(report.kept)["bn_after_block"]
    assert [layer.name for layer in _batch_norms(folded)] == ["bn_after_block"]
    np.testing.assert_allclose(
        folded.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def test_folded_model_computes_inference_even_in_training_mode():
    model = _cnn_with_batch_norms()
    x = _data((12, 12, 3))
    folded = fusion.fold_batch_norms(model)
    inference = np.asarray(model(x, training=False))
    # In training mode the original normalizes with the batch statistics...
    assert not np.allclose(np.asarray(model(x, training=True)), inference)
    # ...the folded model has no BatchNorm left and always computes inference.
    np.testing.assert_allclose(
        np.asarray(folded(x, training=True)), inference, rtol=1e-5, atol=1e-5
    )


def test_folded_model_saves_and_loads(tmp_path):
    model = _cnn_with_batch_norms()
    x = _data((12, 12, 3))
    folded = fusion.fold_batch_norms(model)
    path = os.path.join(tmp_path, "folded.keras")
    folded.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), folded.predict(x, verbose=0), atol=1e-6
    )


def test_subclassed_model_is_refused():
    model = helpers.subclassed_mlp()
    with pytest.raises(ValueError, match="subclassed SubclassedMLP"):
        fusion.fold_batch_norms(model)
    with pytest.raises(TypeError, match="keras.Model"):
        fusion.fold_batch_norms(L.Dense(3))
