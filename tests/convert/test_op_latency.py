"""Each operator of a LiteRT file timed alone (`op_latencies`)."""

import keras
import numpy as np
import pytest

from keras_compress.convert import flatbuffer
from keras_compress.convert import interpreter as interpreter_lib
from keras_compress.convert import layer_latencies
from keras_compress.convert import op_details
from keras_compress.convert import op_latencies
from keras_compress.convert import op_latency
from keras_compress.convert import to_tflite


def _cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(3, name="depthwise"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="dense"),
            keras.layers.Dense(4, name="head"),
        ]
    )


def _token_model():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embedding")(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="head")(x))


def _images(n=64):
    return np.random.default_rng(0).random((n, 12, 12, 1), dtype=np.float32)


def _files():
    """`(label, file, one sample)` for the kinds of operators and tensors a
    file can hold."""
    cnn, x = _cnn(), _images()
    tokens = np.random.default_rng(1).integers(0, 20, (64, 6), dtype=np.int32)
    yield "float32", to_tflite(cnn), x[:1]
    yield "int8", to_tflite(cnn, "int8", representative_data=x), x[:1]
    yield (
        "w4a8 map",
        to_tflite(
            cnn,
            "int8",
            representative_data=x,
            precision={"conv": "w4a8", "dense": "w4a8"},
        ),
        x[:1],
    )
    dynamic = {"conv": "w4-dynamic", "dense": "w4-dynamic"}
    yield "w4 dynamic", to_tflite(cnn, precision=dynamic), x[:1]
    # GATHER's indices come from the input: they must be real ones.
    yield "tokens", to_tflite(_token_model()), tokens[:1]


@pytest.fixture(scope="module")
def files():
    return {label: (content, sample) for label, content, sample in _files()}


@pytest.mark.parametrize(
    "label", ["float32", "int8", "w4a8 map", "w4 dynamic", "tokens"]
)
def test_each_operator_alone_computes_what_it_computes_in_the_file(
    files, label
):
    # The one-operator file is a faithful cut: fed the values its operator
    # reads in a run of the whole file, it writes exactly what that
    # operator writes there (the same kernel, weights and quantization).
    content, sample = files[label]
    model = flatbuffer.read_model(content)
    values = op_latency._tensor_values(content, sample)
    operators = model.subgraphs[0].operators
    assert operators
    for index, op in enumerate(operators):
        alone = op_latency.single_op_file(model, index, values)
        assert len(flatbuffer.read_model(alone).subgraphs[0].operators) == 1
        interpreter = interpreter_lib._allocated_interpreter(alone)
        fed, _ = op_latency._inputs_alone(model, op, values)
        for detail, tensor in zip(interpreter.get_input_details(), fed):
            interpreter.set_tensor(detail["index"], values[tensor])
        interpreter.invoke()
        outputs = flatbuffer.tensor_indices(op.outputs)
        for detail, tensor in zip(interpreter.get_output_details(), outputs):
            np.testing.assert_array_equal(
                interpreter.get_tensor(detail["index"]),
                values[tensor],
                err_msg=f"{label}: operator {index}",
            )


def test_every_operator_is_timed_and_named():
    cnn, x = _cnn(), _images()
    content = to_tflite(
        cnn,
        "int8",
        representative_data=x,
        precision={"conv": "w4a8", "dense": "w4a8"},
    )
    rows = op_latencies(content, sample=x[:1], num_runs=3, num_warmup=1)
    assert [r.op_name for r in rows] == [o.op_name for o in op_details(content)]
    assert [r.op_index for r in rows] == list(range(len(rows)))
    assert all(r.latency_s > 0 and r.note is None for r in rows), rows
    # The file records which layer each weight operator came from.
    by_layer = {r.layer: r.op_name for r in rows if r.layer is not None}
    assert by_layer == {
        "conv": "CONV_2D",
        "depthwise": "DEPTHWISE_CONV_2D",
        "dense": "FULLY_CONNECTED",
        "head": "FULLY_CONNECTED",
    }
    totals = layer_latencies(rows)
    assert list(totals) == ["conv", "depthwise", "dense", "head"]
    for layer, seconds in totals.items():
        assert seconds == sum(r.latency_s for r in rows if r.layer == layer)
    # A file without the record still names each operator's output.
    plain = op_latencies(to_tflite(cnn), num_runs=1, num_warmup=0)
    assert all(r.layer is None and r.output_name for r in plain)
    assert layer_latencies(plain) == {}


def test_bad_arguments_are_refused():
    content = to_tflite(_cnn())
    with pytest.raises(
        ValueError, match=r"input .* has shape \(2, 12, 12, 1\)"
    ):
        op_latencies(content, sample=_images(2))
    with pytest.raises(ValueError, match="num_runs"):
        op_latencies(content, num_runs=0)
