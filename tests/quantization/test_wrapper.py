"""`QuantizeWrapper`: integer kernels for every supported layer, config."""

import keras
import numpy as np
import pytest

from keras_compress import quantization as q
from tests.quantization import litert_checks

L = keras.layers


def _conv2d_model():
    """Every supported 2D layer once, with the activations LiteRT fuses,
    a fixed-range one (sigmoid) and one between two quantizers (silu)."""
    inputs = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = L.DepthwiseConv2D(
        3,
        depth_multiplier=2,
        padding="same",
        activation="relu6",
        name="depthwise",
    )(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="separable")(x)
    x = L.Conv2DTranspose(4, 3, strides=2, activation="silu", name="transpose")(
        x
    )
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(8, activation="sigmoid", name="dense_sigmoid")(x)
    outputs = L.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def _conv1d_model():
    inputs = keras.Input((12, 3))
    x = L.Conv1D(6, 3, padding="causal", activation="relu", name="c1")(inputs)
    x = L.Conv1D(6, 3, dilation_rate=2, strides=1, name="c2")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(3, activation="tanh", name="logits")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def converted():
    """`{kind: (qat_model, x, flatbuffer)}` for the two models above."""
    keras.utils.set_random_seed(0)
    result = {}
    for kind, build, shape in (
        ("2d", _conv2d_model, (10, 10, 3)),
        ("1d", _conv1d_model, (12, 3)),
    ):
        x, _ = litert_checks.toy_images(shape, 3, 128, seed=0)
        qat = litert_checks.observe(q.quantize_model(build()), x)
        result[kind] = (qat, x, litert_checks.convert_qat(qat))
    return result


# (model, LiteRT op, number of them, per-channel weights?)
KERNELS = [
    ("2d", "CONV_2D", 2, True),  # Conv2D and the pointwise part
    ("2d", "DEPTHWISE_CONV_2D", 2, True),  # DepthwiseConv2D, separable
    ("2d", "TRANSPOSE_CONV", 1, False),
    ("2d", "FULLY_CONNECTED", 2, False),
    ("1d", "CONV_2D", 2, True),
    ("1d", "FULLY_CONNECTED", 1, False),
]


@pytest.mark.parametrize("kind, op_name, count, per_channel", KERNELS)
def test_integer_kernels(converted, kind, op_name, count, per_channel):
    _, _, content = converted[kind]
    weights = litert_checks.weight_tensors(content, op_name)
    assert len(weights) == count
    for values, scales in weights:
        assert values.dtype == np.int8
        assert np.abs(values.astype(int)).max() <= 127  # narrow range
        channels = (
            values.shape[0]
            if op_name != "DEPTHWISE_CONV_2D"
            else values.shape[-1]
        )
        assert len(scales) == (channels if per_channel else 1)


@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_integer_end_to_end_and_matches_keras(converted, kind):
    qat, x, content = converted[kind]
    litert_checks.check_integer_end_to_end(content)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )


def test_activations_become_their_integer_ops(converted):
    names = [op.name for op in litert_checks.ops_of(converted["2d"][2])]
    assert "LOGISTIC" in names  # sigmoid, and the sigmoid of silu
    assert "RELU" not in names and "RELU6" not in names  # fused
    names_1d = [op.name for op in litert_checks.ops_of(converted["1d"][2])]
    assert "TANH" in names_1d


def test_activation_moves_to_the_wrapper(converted):
    qat = converted["2d"][0]
    conv = qat.get_layer("quant_conv")
    assert conv.layer.activation is keras.activations.linear
    assert conv.activation is keras.activations.relu
    assert conv._pre_activation_spec is None  # relu is fused: no quantizer
    silu = qat.get_layer("quant_transpose")
    assert silu._pre_activation_spec is not None
    sigmoid = qat.get_layer("quant_dense_sigmoid")
    quantizer, _ = sigmoid._output_specs[0]
    assert quantizer == q.FixedRangeQuantizer(0.0, 255 / 256)


def test_wrapper_round_trips_through_its_config(converted):
    qat, x, _ = converted["2d"]
    wrapper = qat.get_layer("quant_separable")
    clone = q.QuantizeWrapper.from_config(wrapper.get_config())
    inputs = qat.get_layer("quant_depthwise").output
    clone.build(inputs.shape)
    clone.set_weights(wrapper.get_weights())
    sample = np.random.default_rng(0).uniform(size=(2, *inputs.shape[1:]))
    np.testing.assert_allclose(
        clone(sample.astype("float32")), wrapper(sample.astype("float32"))
    )


def test_wrapper_in_a_model_written_by_hand():
    inputs = keras.Input((6, 6, 2))
    x = q.QuantizeLayer()(inputs)
    x = q.QuantizeWrapper(
        L.Conv2D(4, 3, use_bias=False),
        batch_norm=L.BatchNormalization(),
        activation="relu",
    )(x)
    x = L.Flatten()(x)
    outputs = q.QuantizeWrapper(L.Dense(2))(x)
    model = keras.Model(inputs, outputs)
    x, y = litert_checks.toy_images((6, 6, 2), 2, 64, seed=0)
    litert_checks.compile_and_fit(model, x, y)
    assert q.unobserved_quantizers(model) == []


def test_wrapper_errors_name_the_layer():
    with pytest.raises(ValueError, match="'norm'.*cannot be quantized"):
        q.QuantizeWrapper(L.UnitNormalization(name="norm"))
    with pytest.raises(ValueError, match="already has activation 'relu'"):
        q.QuantizeWrapper(L.Dense(2, activation="relu"), activation="relu")
    with pytest.raises(ValueError, match="quantize_model"):
        q.QuantizeWrapper(keras.Sequential([L.Dense(2)]))
    with pytest.raises(ValueError, match="QuantizeConfig"):
        q.QuantizeWrapper(L.Dense(2), quantize_config=object())
