"""GPTQ rounding of Dense and Conv2D kernels (`quantization.gptq`)."""

import keras
import numpy as np
import pytest

from keras_compress.quantization import gptq

L = keras.layers


def _layer_and_inputs(kind):
    rng = np.random.default_rng(0)
    if kind == "dense":
        layer = L.Dense(24)
        inputs = rng.normal(size=(256, 64)).astype("float32")
        # Correlated inputs, as real activations are: where GPTQ pays.
        inputs[:, 32:] = inputs[:, :32] + 0.1 * inputs[:, 32:]
    else:
        layer = L.Conv2D(12, 3, strides=2, padding="same")
        # Neighbouring pixels alike, as in images.
        coarse = rng.normal(size=(32, 5, 5, 6)).astype("float32")
        inputs = coarse.repeat(2, axis=1).repeat(2, axis=2)
        inputs += 0.1 * rng.normal(size=inputs.shape).astype("float32")
    layer.build(inputs.shape)
    return layer, inputs


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_patches_times_kernel_is_the_layer(kind):
    layer, inputs = _layer_and_inputs(kind)
    kernel = np.asarray(layer.kernel)
    columns = gptq._columns(inputs, kernel, layer)
    outputs = columns @ kernel.reshape(-1, kernel.shape[-1])
    expected = np.asarray(layer(inputs)) - np.asarray(layer.bias)
    np.testing.assert_allclose(
        outputs, expected.reshape(len(outputs), -1), atol=1e-4
    )


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_lands_on_the_grid_and_beats_rounding(kind, bits):
    layer, inputs = _layer_and_inputs(kind)
    kernel = np.asarray(layer.kernel)
    rounded = gptq.quantize_kernel(kernel, inputs, bits, layer)

    qmax = 2 ** (bits - 1) - 1
    flat = kernel.reshape(-1, kernel.shape[-1])
    scale = np.abs(flat).max(axis=0) / qmax
    levels = rounded.reshape(flat.shape) / scale
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    # Each channel keeps its largest weight: max |level| is qmax exactly,
    # so a quantizer recomputing max|w| / qmax finds the same scale.
    np.testing.assert_allclose(np.abs(levels).max(axis=0), qmax, atol=1e-4)

    # GPTQ's objective: the layer's outputs on the calibration inputs.
    columns = gptq._columns(inputs, kernel, layer)
    nearest = np.clip(np.round(flat / scale), -qmax, qmax) * scale

    def output_error(weights):
        return np.linalg.norm(columns @ (flat - weights))

    assert output_error(rounded.reshape(flat.shape)) < 0.9 * output_error(
        nearest
    )


def test_round_layers_rounds_a_model_in_place_from_its_own_inputs():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    x = L.DepthwiseConv2D(3, name="depthwise")(x)
    outputs = L.Dense(4, name="head")(L.Flatten()(x))
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(64, 8, 8, 3))
    before = np.asarray(model.get_layer("depthwise").kernel).copy()
    rounded = gptq.round_layers(
        model, {"conv": 4, "depthwise": 4, "head": 8}, data.astype("float32")
    )
    # Depthwise kernels are not a matrix product over patches: skipped.
    assert rounded == ["conv", "head"]
    for name, bits in (("conv", 4), ("head", 8)):
        kernel = np.asarray(model.get_layer(name).kernel)
        flat = kernel.reshape(-1, kernel.shape[-1])
        levels = flat / (np.abs(flat).max(axis=0) / (2 ** (bits - 1) - 1))
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    np.testing.assert_array_equal(model.get_layer("depthwise").kernel, before)
    # The recording hooks are gone.
    assert "call" not in vars(model.get_layer("conv"))
