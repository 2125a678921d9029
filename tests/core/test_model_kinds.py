"""Model kinds the techniques used to break on (issue 13's list)."""

import warnings

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.convert import interpreter
from tests import helpers

L = keras.layers


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class ConvGapNet(keras.Model):
    """Conv -> BN -> relu (keras.ops) -> GAP -> Dense."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = L.Conv2D(8, 3)
        self.bn = L.BatchNormalization()
        self.gap = L.GlobalAveragePooling2D()
        self.head = L.Dense(4)

    def call(self, inputs):
        x = keras.ops.relu(self.bn(self.conv(inputs)))
        return self.head(self.gap(x))


def _subclassed():
    model = ConvGapNet()
    model(np.zeros((1, 8, 8, 1), "float32"))
    return model


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(
        0, 4, n
    )


def test_qat_of_subclassed_model_with_global_average_pooling():
    x, _ = _data()
    qat = kc.quantization.quantize_model(_subclassed())
    qat(x, training=True)  # the observers learn their ranges
    blob = kc.convert.to_tflite(qat, "int8")
    ops = {op.op_name for op in interpreter.op_details(blob)}
    assert "CONV_2D" in ops and "FULLY_CONNECTED" in ops
    outputs = interpreter.run_tflite(blob, x)
    keras_outputs = keras.ops.convert_to_numpy(qat(x))
    assert np.abs(outputs - keras_outputs).max() < 0.1


def test_stripped_subclassed_model_exports_without_a_call():
    pruned = kc.pruning.prune_low_magnitude(_subclassed())
    stripped = kc.pruning.strip_pruning(pruned)
    x, _ = _data(4)
    blob = kc.convert.to_tflite(stripped)
    np.testing.assert_allclose(
        interpreter.run_tflite(blob, x),
        keras.ops.convert_to_numpy(stripped(x)),
        atol=1e-5,
    )


def test_subclassed_model_loaded_from_a_file_converts(tmp_path):
    # Loading builds the model from its build config without calling it.
    path = str(tmp_path / "model.keras")
    _subclassed().save(path)
    loaded = keras.saving.load_model(path)
    x, _ = _data(4)
    blob = kc.convert.to_tflite(loaded)
    np.testing.assert_allclose(
        interpreter.run_tflite(blob, x),
        keras.ops.convert_to_numpy(loaded(x)),
        atol=1e-5,
    )


def test_qat_of_graph_with_stateless_ops():
    # `x * 0.5 + y` on symbolic tensors adds keras.ops nodes (not layers)
    # to the graph, as keras.applications' MobileNetV3 does.
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same")(inputs)
    h = h * 0.5 + inputs
    outputs = L.Dense(4)(L.Flatten()(h))
    model = keras.Model(inputs, outputs)
    qat = kc.quantization.quantize_model(model)
    x, _ = _data(8)
    assert qat(x).shape == (8, 4)


def test_whole_model_two_four_leaves_misfit_layers_dense():
    inputs = keras.Input((8, 8, 3))  # 3 input channels: 2:4 cannot fit
    h = L.Conv2D(8, 3, name="stem")(inputs)
    h = L.Conv2D(8, 3, name="body")(h)
    outputs = L.Dense(4, name="head")(L.Flatten()(h))
    model = keras.Model(inputs, outputs)
    with pytest.warns(UserWarning, match=r"1 layer\(s\) left dense.*'stem'"):
        pruned = kc.pruning.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    wrapped = {
        layer.layer.name
        for layer in pruned.layers
        if isinstance(layer, kc.pruning.PruneLowMagnitude)
    }
    assert wrapped == {"body", "head"}
    with pytest.raises(ValueError, match="3 input channels"):
        kc.pruning.prune_low_magnitude(
            model, sparsity_m_by_n=(2, 4), layers_to_prune=["stem"]
        )
    # Layers named that fit the pattern: nothing is left dense. (Only
    # that warning counts: JAX's arrays warn on NumPy's copy keyword.)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kc.pruning.prune_low_magnitude(
            model, sparsity_m_by_n=(2, 4), layers_to_prune=["body", "head"]
        )
    assert not [w for w in caught if "left dense" in str(w.message)]


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class ResidualBlock(L.Layer):
    """A custom layer made of layers, as KerasHub writes its Transformer
    blocks: sub-layers created in `build`, called by keyword, a residual
    and an extra call argument in Python."""

    def build(self, input_shape):
        self.norm = L.LayerNormalization()
        self.norm.build(input_shape)
        self.dense = L.Dense(input_shape[-1])
        self.dense.build(input_shape)

    def call(self, inputs, scale=None):
        x = self.dense(inputs=self.norm(inputs))
        if scale is not None:
            x = x * scale
        return inputs + x


def _with_block():
    inputs = keras.Input((6, 8), name="tokens")
    scale = keras.Input((6, 1), name="scale")
    x = L.Dense(8, name="embed")(inputs)
    x = ResidualBlock(name="block")(x, scale=scale)
    outputs = L.Dense(4, name="head")(L.GlobalAveragePooling1D()(x))
    return keras.Model({"tokens": inputs, "scale": scale}, outputs)


def _block_data(n=32):
    rng = np.random.default_rng(0)
    x = {
        "tokens": rng.normal(size=(n, 6, 8)).astype("float32"),
        "scale": rng.uniform(0.5, 1.5, size=(n, 6, 1)).astype("float32"),
    }
    return x, rng.integers(0, 4, n)


def _block_layers(model):
    block = next(
        layer
        for layer in model._flatten_layers(include_self=False)
        if layer.name == "block"
    )
    return block


@pytest.mark.parametrize("technique", ["prune", "cluster"])
def test_weight_techniques_reach_inside_a_custom_block(technique, tmp_path):
    model = _with_block()
    x, y = _block_data()
    if technique == "prune":
        wrapped = kc.pruning.prune_low_magnitude(
            model, pruning_schedule=kc.pruning.ConstantSparsity(0.5, 0)
        )
        callbacks = [kc.pruning.UpdatePruningStep()]
        strip = kc.pruning.strip_pruning
    else:
        wrapped = kc.clustering.cluster_weights(model, number_of_clusters=3)
        callbacks = []
        strip = kc.clustering.strip_clustering
    wrapped.compile("adam", "mse")
    wrapped.fit(x, np.eye(4)[y], epochs=1, verbose=0, callbacks=callbacks)
    # Saved and loaded with its wrappers in place.
    path = str(tmp_path / "wrapped.keras")
    wrapped.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-5
    )
    stripped = strip(wrapped)
    block = _block_layers(stripped)
    assert isinstance(block, ResidualBlock)  # the user's class again
    kernel = keras.ops.convert_to_numpy(block.dense.kernel)
    if technique == "prune":
        assert np.mean(kernel == 0) >= 0.5
    else:
        assert len(np.unique(kernel)) <= 3
    # The original model is untouched.
    assert (
        np.mean(
            keras.ops.convert_to_numpy(_block_layers(model).dense.kernel) == 0
        )
        == 0
    )
    blob = kc.convert.to_tflite(stripped)
    np.testing.assert_allclose(
        interpreter.run_tflite(blob, x),
        stripped.predict(x, verbose=0),
        atol=1e-5,
    )


def test_qat_quantizes_the_layers_of_a_custom_block():
    model = _with_block()
    x, y = _block_data()
    qat = kc.quantization.quantize_model(model)
    wrapped = [
        (layer.layer.name, type(layer.layer).__name__)
        for layer in qat._flatten_layers(include_self=False)
        if isinstance(layer, kc.quantization.QuantizeWrapper)
    ]
    assert ("embed", "Dense") in wrapped and ("head", "Dense") in wrapped
    # The block's own layers (copies, named by Keras).
    block = _block_layers(qat)
    inside = {type(wrapper.layer).__name__ for wrapper in block.wrappers}
    assert inside == {"LayerNormalization", "Dense"}
    qat.compile("adam", "mse")
    qat.fit(x, np.eye(4)[y], epochs=1, verbose=0)
    blob = kc.convert.to_tflite(qat, "int8")
    ops = [op.op_name for op in interpreter.op_details(blob)]
    assert ops.count("FULLY_CONNECTED") == 3
    # The file takes the inputs by name and computes what QAT simulated.
    outputs = interpreter.run_tflite(blob, x)
    expected = qat.predict(x, verbose=0)
    step = np.abs(expected).max() / 127
    assert np.mean(np.abs(outputs - expected) <= 1.001 * 2 * step) >= 0.95


def _embeddings(model):
    found = {}
    for layer in model._flatten_layers(include_self=False):
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, L.ReversibleEmbedding):
            found[id(inner)] = inner
    return list(found.values())


@pytest.mark.parametrize("technique", ["qat", "prune", "cluster"])
def test_a_tied_embedding_stays_one_layer(technique):
    model = helpers.tied_language_model()
    if technique == "qat":
        result = kc.quantization.quantize_model(model)
    elif technique == "prune":
        result = kc.pruning.strip_pruning(
            kc.pruning.prune_low_magnitude(
                model, pruning_schedule=kc.pruning.ConstantSparsity(0.5, 0)
            )
        )
    else:
        result = kc.clustering.strip_clustering(
            kc.clustering.cluster_weights(model, number_of_clusters=4)
        )
    assert len(_embeddings(result)) == 1
    tokens = np.random.default_rng(0).integers(0, 16, (4, 5)).astype("int32")
    assert result.predict(tokens, verbose=0).shape == (4, 5, 16)


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class DeclaredBlock(ResidualBlock):
    """A custom block that says how it is quantized: one unit, not opened."""

    def get_quantize_config(self):
        return kc.quantization.LayerQuantizeConfig(
            {"dense.kernel": kc.quantization.LastValueQuantizer(8)},
            kc.quantization.MovingAverageQuantizer(8),
        )


def test_a_block_with_its_own_quantize_config_is_one_unit():
    inputs = keras.Input((6, 8))
    outputs = DeclaredBlock(name="block")(L.Dense(8)(inputs))
    qat = kc.quantization.quantize_model(keras.Model(inputs, outputs))
    wrappers = {
        layer.layer.name: type(layer.layer).__name__
        for layer in qat._flatten_layers(include_self=False)
        if isinstance(layer, kc.quantization.QuantizeWrapper)
    }
    assert wrappers.get("block") == "DeclaredBlock"
    assert "LayerNormalization" not in wrappers.values()
