"""Tests of `to_onnx` and `run_onnx`, each on the file in ONNX Runtime."""

import os
import sys
import time

import keras
import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import tensorflow as tf

from keras_compress.convert import run_onnx
from keras_compress.convert import to_onnx
from tests.convert.conftest import INPUT_SHAPE
from tests.convert.conftest import SubclassedModel
from tests.convert.conftest import dict_io_model
from tests.convert.conftest import fake_quant_model
from tests.convert.conftest import keras_quantized

# float16 weights and activations: every value and every partial sum is
# rounded to an 11-bit mantissa (relative error 2**-11 ~ 5e-4), a few
# hundred terms per dot product and five layers deep. Rounding errors of
# that size add up to ~1e-3 of the output range in the worst case;
# observed <= 2e-4. 1 % of the range is the same bound as LiteRT float16.
FLOAT16_RTOL = 1e-2


@pytest.fixture(scope="module")
def onnx_files(trained_model, toy_test):
    """(kind, Keras outputs, float32 file, float16 file) per model kind."""
    kind, model = trained_model
    x_test, _ = toy_test
    expected = model.predict(x_test, verbose=0)
    return kind, expected, to_onnx(model), to_onnx(model, float16=True)


def _graph(content):
    return onnx.load_from_string(content).graph


def _weight_bytes(content):
    return sum(
        onnx.numpy_helper.to_array(t).nbytes
        for t in _graph(content).initializer
    )


def test_float32_matches_keras_at_any_batch_size(onnx_files, toy_test):
    kind, expected, content, _ = onnx_files
    x, _ = toy_test
    # Batch 7 leaves a last batch of 2, so three batch sizes run.
    for batch_size in (1, 7, len(x)):
        actual = run_onnx(content, x[:30], batch_size=batch_size)
        assert actual.dtype == np.float32
        assert actual.shape == expected[:30].shape
        assert np.max(np.abs(actual - expected[:30])) < 1e-5, (
            kind,
            batch_size,
        )
    graph = _graph(content)
    assert {"Conv", "MatMul"} <= {node.op_type for node in graph.node}
    (model_input,) = graph.input
    dims = model_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == list(INPUT_SHAPE)
    assert [o.name for o in graph.output] == ["output_0"]


def test_float16_has_half_weights_and_float32_io(onnx_files, toy_test):
    kind, expected, float32_file, content = onnx_files
    x, _ = toy_test
    actual = run_onnx(content, x, batch_size=7)
    assert actual.dtype == np.float32
    diff = np.max(np.abs(actual - expected))
    assert diff < FLOAT16_RTOL * np.ptp(expected), (kind, diff)
    agreement = np.mean(actual.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.97, (kind, agreement)
    graph = _graph(content)
    float16 = onnx.TensorProto.FLOAT16
    float32 = onnx.TensorProto.FLOAT
    weights = [t for t in graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == float16 for t in weights)
    for value in (*graph.input, *graph.output):
        assert value.type.tensor_type.elem_type == float32
    assert _weight_bytes(content) < 0.51 * _weight_bytes(float32_file)


def test_fixed_batch(toy_test):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    content = to_onnx(model, dynamic_batch=False)
    dims = _graph(content).input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, *INPUT_SHAPE]
    x, _ = toy_test
    # run_onnx runs a fixed-batch file one sample at a time.
    expected = model.predict(x[:5], verbose=0)
    np.testing.assert_allclose(run_onnx(content, x[:5]), expected, atol=1e-5)


def test_several_inputs_and_outputs():
    keras.utils.set_random_seed(0)
    image = keras.Input((6, 6, 2), name="image")
    extra = keras.Input((3,), name="extra")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([x, extra])
    logits = keras.layers.Dense(5)(x)
    score = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model([image, extra], [logits, score])
    content = to_onnx(model)
    graph = _graph(content)
    assert [i.name for i in graph.input] == ["image", "extra"]
    assert [o.name for o in graph.output] == ["output_0", "output_1"]
    rng = np.random.default_rng(0)
    inputs = [
        rng.random((9, 6, 6, 2), dtype="float32"),
        rng.random((9, 3), dtype="float32"),
    ]
    actual = run_onnx(content, inputs, batch_size=4)
    expected = model.predict(inputs, verbose=0)
    assert len(actual) == 2
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=1e-5)


def test_dict_inputs_and_outputs_keep_their_names():
    model = dict_io_model()
    content = to_onnx(model)
    graph = _graph(content)
    assert [i.name for i in graph.input] == ["extra", "image"]
    assert [o.name for o in graph.output] == ["logits", "score"]
    rng = np.random.default_rng(0)
    extra_batch = rng.random((4, 3), dtype="float32")
    image_batch = rng.random((4, 6, 6, 2), dtype="float32")
    expected = model.predict({"image": image_batch, "extra": extra_batch})
    logits, score = run_onnx(content, [extra_batch, image_batch])
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-5)
    np.testing.assert_allclose(score, expected["score"], atol=1e-5)
    # Or the dict the Keras model takes, matched by name.
    by_name = run_onnx(content, {"image": image_batch, "extra": extra_batch})
    np.testing.assert_allclose(by_name[0], logits)
    with pytest.raises(ValueError, match=r"\['extra', 'img'\].*'image'"):
        run_onnx(content, {"img": image_batch, "extra": extra_batch})


def test_keras_quantized_model_keeps_int8_kernels(trained_model, toy_test):
    kind, model = trained_model
    quantized = keras_quantized(model)
    x, _ = toy_test
    content = to_onnx(quantized)
    graph = _graph(content)
    assert "MatMulInteger" in {node.op_type for node in graph.node}
    int8_weights = [
        onnx.numpy_helper.to_array(t)
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2
    ]
    keras_kernels = [
        keras.ops.convert_to_numpy(v)
        for v in quantized.weights
        if v.dtype == "int8"
    ]
    assert len(keras_kernels) == 2, kind  # the two Dense kernels
    for kernel in keras_kernels:
        assert any(np.array_equal(kernel, w) for w in int8_weights), kind
    # The file computes what Keras's int8 layers compute (dynamic input
    # quantization, int8 matmul, rescale), in the same float32 steps, so it
    # matches the quantized Keras model, not just the float one.
    expected = quantized.predict(x, verbose=0)
    assert np.max(np.abs(run_onnx(content, x) - expected)) < 1e-5, kind


def test_fake_quant_model_exports_quantize_dequantize_pairs():
    model = fake_quant_model()
    content = to_onnx(model)
    ops = [node.op_type for node in _graph(content).node]
    assert ops.count("QuantizeLinear") >= 4
    assert ops.count("DequantizeLinear") >= 4
    x = np.random.default_rng(0).normal(size=(20, 16)).astype("float32")
    diff = np.abs(run_onnx(content, x) - model.predict(x, verbose=0))
    # tf2onnx's QuantizeLinear/DequantizeLinear do not reproduce
    # TensorFlow's FakeQuant bit for bit: it picks the other zero point
    # for symmetric ranges (TF nudges (-4, 4) to [-127, 128] steps, tf2onnx
    # to [-128, 127]), and here about 40 % of the outputs land one step
    # (16 / 255) of their grid away, rarely two. Check the grid, not bits.
    step = 16 / 255
    assert np.max(diff) <= 3 * step + 1e-6


def test_path_gets_the_returned_bytes(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    content = to_onnx(model, path)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temporary left
    x = np.ones((3, 8), "float32")
    np.testing.assert_allclose(run_onnx(str(path), x), run_onnx(content, x))


def test_the_same_model_gives_the_same_bytes():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    assert to_onnx(model) == to_onnx(model)


def test_missing_folder_fails_before_conversion(tmp_path, monkeypatch):
    import tf2onnx

    def no_conversion(*args, **kwargs):
        raise AssertionError("the model was converted")

    monkeypatch.setattr(tf2onnx.convert, "from_function", no_conversion)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    start = time.perf_counter()
    with pytest.raises(ValueError, match="does not exist"):
        to_onnx(model, tmp_path / "missing" / "model.onnx")
    assert time.perf_counter() - start < 1.0


def test_unsupported_op_names_layer_and_fix():
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(tf.math.bessel_i1e, name="bessel")(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(RuntimeError) as info:
        to_onnx(model)
    message = str(info.value)
    assert "BesselI1e" in message
    assert "'bessel' (Lambda)" in message
    assert "allow_select_tf_ops=True" in message


@pytest.mark.parametrize("opset", [8, 99, "17"])
def test_bad_opset_names_the_range(opset):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match=r"`opset`=.*opsets 9 to \d+"):
        to_onnx(model, opset=opset)


def test_other_opset_is_written():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    opsets = onnx.load_from_string(to_onnx(model, opset=13)).opset_import
    assert {o.version for o in opsets if o.domain in ("", "ai.onnx")} == {13}
    default = onnx.load_from_string(to_onnx(model)).opset_import
    assert {o.version for o in default if o.domain in ("", "ai.onnx")} == {17}


def test_subclassed_model_never_called():
    with pytest.raises(ValueError, match="called on data"):
        to_onnx(SubclassedModel())


@pytest.mark.parametrize(
    "module, call",
    [
        ("tf2onnx", lambda m: to_onnx(m)),
        ("onnxconverter_common", lambda m: to_onnx(m, float16=True)),
        ("onnxruntime", lambda m: run_onnx(b"\x08", np.ones((1, 8)))),
    ],
)
def test_missing_package_says_what_to_install(module, call, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    with pytest.raises(
        ImportError, match=r"pip install keras-compress\[onnx\]"
    ):
        call(model)
