"""Reading weight tensors back from LiteRT files (`weight_tensors`)."""

import numpy as np
import pytest

from keras_compress.convert import flatbuffer
from keras_compress.convert import to_tflite
from keras_compress.convert import weight_tensors
from tests import helpers


@pytest.fixture(scope="module")
def model_and_data():
    model, x, _ = helpers.make_model("functional")
    return model, x


@pytest.mark.parametrize(
    "mode, dtype, granularity, compute",
    [
        ("float32", "float32", None, "float"),
        # Stored half, dequantized to float32 when the file loads.
        ("float16", "float16", None, "float"),
        ("int8", "int8", "channel", "integer"),
    ],
)
def test_each_converter_mode_reads_back(
    model_and_data, mode, dtype, granularity, compute
):
    model, x = model_and_data
    content = to_tflite(
        model, mode, representative_data=x if mode == "int8" else None
    )
    tensors = weight_tensors(content)
    # fc1, fc2 and logits: one FULLY_CONNECTED each, in execution order.
    assert [t.op_name for t in tensors] == ["FULLY_CONNECTED"] * 3
    kernels = [np.asarray(layer.kernel) for layer in model.layers[1:3]]
    assert [t.shape for t in tensors[:2]] == [k.T.shape for k in kernels]
    for tensor in tensors:
        assert (tensor.dtype, tensor.granularity, tensor.compute) == (
            dtype,
            granularity,
            compute,
        )
        itemsize = {"float32": 4, "float16": 2, "int8": 1}[dtype]
        assert tensor.num_bytes == np.prod(tensor.shape) * itemsize
        # Plain converter files carry no layer map.
        assert tensor.layer is None


def test_the_layer_map_survives_a_round_trip(model_and_data):
    model, _ = model_and_data
    content = to_tflite(model)
    first, _, last = (t.op_index for t in weight_tensors(content))
    parsed = flatbuffer.read_model(content)
    flatbuffer.set_layer_map(parsed, {first: "fc1", last: "logits"})
    content = flatbuffer.write_model(parsed)
    assert flatbuffer.layer_map(flatbuffer.read_model(content)) == {
        first: "fc1",
        last: "logits",
    }
    tensors = weight_tensors(content)
    assert [t.layer for t in tensors] == ["fc1", None, "logits"]
    # 16x16, 16x16 and 3x16 float32 kernels.
    assert flatbuffer.describe(tensors) == "3 float32 (2,240 bytes)"


def test_a_transposed_convolution_reads_its_activation_not_its_shape():
    import keras

    inputs = keras.Input((8, 8, 32))
    # 18,432 weights: enough for the converter's dynamic range (>= 1024).
    outputs = keras.layers.Conv2DTranspose(64, 3, strides=2)(inputs)
    model = keras.Model(inputs, outputs)
    # TRANSPOSE_CONV's first input is a constant int32 output shape; the
    # float activation decides how it computes.
    [tensor] = weight_tensors(to_tflite(model, "dynamic"))
    assert tensor.op_name == "TRANSPOSE_CONV"
    assert (tensor.dtype, tensor.compute) == ("int8", "dynamic")
