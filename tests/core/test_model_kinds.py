"""Model kinds the techniques used to break on (issue 13's list)."""

import warnings

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.convert import interpreter

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
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kc.pruning.prune_low_magnitude(
            model, sparsity_m_by_n=(2, 4), layers_to_prune=["body", "head"]
        )
