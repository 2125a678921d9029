"""Quantized computations: which layer kind computes how, and a custom
layer's own computation converting to an integer file."""

import keras
import numpy as np
import pytest
from keras import layers as L
from keras import ops

import keras_compress as kc
from keras_compress import quantization as q
from keras_compress.quantization import computations
from tests.quantization import litert_checks


@keras.saving.register_keras_serializable(package="kc_tests")
class Bottleneck(L.Layer):
    """`x @ down @ up`: two matrix products in one layer."""

    def __init__(self, width, units, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.units = units

    def build(self, input_shape):
        self.down = self.add_weight(
            shape=(input_shape[-1], self.width), name="down"
        )
        self.up = self.add_weight(shape=(self.width, self.units), name="up")

    def call(self, x):
        return ops.matmul(ops.matmul(x, self.down), self.up)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "units": self.units,
        }


@q.register_quantized_computation(Bottleneck)
class BottleneckComputation(q.QuantizedComputation):
    # LiteRT runs the two products as two int8 FULLY_CONNECTED ops: the
    # tensor between them needs a range.
    required_intermediates = ("hidden",)

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer
        hidden = ops.matmul(inputs, forward.weight(layer.down))
        hidden = forward.quantize("hidden", hidden)
        return ops.matmul(hidden, forward.weight(layer.up))


class WiderBottleneck(Bottleneck):
    pass


def _bottleneck_config(with_hidden=True):
    intermediates = {"hidden": q.MovingAverageQuantizer()}
    return q.LayerQuantizeConfig(
        weight_quantizers={
            "down": q.LastValueQuantizer(),
            "up": q.LastValueQuantizer(),
        },
        output_quantizer=q.MovingAverageQuantizer(),
        intermediate_quantizers=intermediates if with_hidden else None,
    )


def _model():
    inputs = keras.Input((16,))
    x = L.Dense(24, activation="relu", name="hidden_dense")(inputs)
    outputs = Bottleneck(6, 4, name="bottleneck")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "layer, expected",
    [
        (L.Dense(2), "_DenseComputation"),
        (L.Conv1D(2, 3), "_Conv1DComputation"),
        (L.Conv2D(2, 3), "_KernelComputation"),
        (L.SeparableConv2D(2, 3), "_SeparableConv2DComputation"),
        (L.ReversibleEmbedding(8, 4), "_ReversibleEmbeddingComputation"),
        (L.Embedding(8, 4), "_EmbeddingComputation"),
        (L.AveragePooling2D(2), "_AveragePoolingComputation"),
        (L.Flatten(), "QuantizedComputation"),
        (Bottleneck(2, 2), "BottleneckComputation"),
        (WiderBottleneck(2, 2), "BottleneckComputation"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, L.Layer) else v,
)
def test_most_specific_registered_class_gives_the_computation(layer, expected):
    assert type(computations.computation_for(layer)).__name__ == expected


def test_a_subclass_of_a_builtin_layer_gets_its_computation():
    class MyDense(L.Dense):
        pass

    assert computations.takes_activation(MyDense(2))
    assert not computations.takes_activation(L.Flatten())


def test_registering_refuses_what_is_not_a_layer_or_a_computation():
    with pytest.raises(ValueError, match="keras.layers.Layer subclass"):
        q.register_quantized_computation(int)
    with pytest.raises(ValueError, match="QuantizedComputation"):
        q.register_quantized_computation(Bottleneck)(object)


def test_missing_intermediate_quantizer_is_named():
    with pytest.raises(ValueError, match=r"\['hidden'\]"):
        q.quantize_model(
            _model(),
            quantize_configs={"bottleneck": _bottleneck_config(False)},
        )


def test_custom_computation_converts_to_an_integer_file():
    keras.utils.set_random_seed(0)
    model = _model()
    x = np.random.default_rng(0).normal(size=(256, 16)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, 256)
    qat = q.quantize_model(
        model, quantize_configs={"bottleneck": _bottleneck_config()}
    )
    litert_checks.compile_and_fit(qat, x, y, epochs=2)
    # Both products of the custom layer, and the Dense before it, run as
    # int8 FULLY_CONNECTED ops, and the file follows the Keras model (on
    # every backend: JAX and PyTorch convert through TensorFlow).
    content = kc.convert.to_tflite(qat, "int8")
    litert_checks.check_integer_end_to_end(content)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )
    fully_connected = [
        op
        for op in litert_checks.ops_of(content)
        if op.name == "FULLY_CONNECTED"
    ]
    assert len(fully_connected) == 3
    for op in fully_connected:
        assert np.dtype(op.inputs[0]["dtype"]) == np.int8
        assert np.dtype(op.inputs[1]["dtype"]) == np.int8
