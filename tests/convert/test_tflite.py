"""Tests of `to_tflite`: every mode, every kind of model, run in LiteRT."""

import os
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from keras_compress.convert import kernel_sparsity
from keras_compress.convert import op_details
from keras_compress.convert import run_tflite
from keras_compress.convert import to_tflite
from keras_compress.convert.verify import float_ops
from tests import helpers
from tests.convert.conftest import INPUT_SHAPE
from tests.convert.conftest import dict_io_model
from tests.convert.conftest import fake_quant_model
from tests.convert.conftest import keras_quantized
from tests.convert.conftest import subclassed_model

# Float16 weights carry an 11-bit mantissa (relative error <= 2**-11 ~ 5e-4
# per weight); over a few layers the outputs drift by ~1e-4 of their range
# (observed <= 2.5e-4). 1 % of the range leaves a wide margin.
FLOAT16_RTOL = 1e-2
# Dynamic range: int8 weights (step = max|w| / 127 per channel) and
# activations quantized on the fly per batch; observed <= 0.2 % of the
# output range. 3 % of the range allows a few layers of int8 rounding.
DYNAMIC_RTOL = 3e-2
# Full int8: every activation is rounded to 1 / 255 of its calibrated range
# at every layer, and outputs beyond the calibrated range are clipped;
# observed <= 2 % of the output range on these models.
INT8_RTOL = 5e-2
# int16x8: activations on a 65535-level grid, so nearly all the error is
# that of the int8 weights, as in dynamic range (observed <= 0.5 % of the
# output range); the same 3 % bound.
INT16X8_RTOL = 3e-2

MODES = [
    ("float32", False),
    ("float16", False),
    ("dynamic", False),
    ("int8", False),
    ("int8", True),
    ("int16x8", False),
]


def _mode_id(mode):
    return f"{mode[0]}{'-int8_io' if mode[1] else ''}"


@pytest.fixture(scope="module", params=MODES, ids=_mode_id)
def converted(request, trained_model, toy_train, toy_test):
    """(kind, mode, int8_io, Keras outputs, file outputs, file bytes)."""
    kind, model = trained_model
    mode, int8_io = request.param
    x_train, _ = toy_train
    x_test, _ = toy_test
    content = to_tflite(
        model,
        mode,
        representative_data=x_train[:100] if mode.startswith("int") else None,
        int8_io=int8_io,
        verbose=0,
    )
    expected = model.predict(x_test, verbose=0)
    return kind, mode, int8_io, expected, run_tflite(content, x_test), content


def test_file_matches_keras(converted):
    # One test per file for both checks: outputs, then kernel dtypes.
    kind, mode, _, expected, actual, content = converted
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    diff = np.max(np.abs(actual - expected))
    output_range = np.ptp(expected)
    if mode == "float32":
        assert diff < 1e-5, kind
    else:
        rtol = {
            "float16": FLOAT16_RTOL,
            "dynamic": DYNAMIC_RTOL,
            "int8": INT8_RTOL,
            "int16x8": INT16X8_RTOL,
        }[mode]
        assert diff < rtol * output_range, (kind, diff, output_range)
    # The toy problem is separable and the models learned it, so the
    # predicted classes must survive quantization.
    agreement = np.mean(actual.argmax(-1) == expected.argmax(-1))
    assert agreement >= 0.97, (kind, agreement)
    _check_kernel_dtypes(*converted[:3], content)


def _weight_dtypes(content, op_names):
    """Dtypes of the weights (second input) of the named ops."""
    return {
        op.input_dtypes[1]
        for op in op_details(content)
        if op.op_name in op_names
    }


def _check_kernel_dtypes(kind, mode, int8_io, content):
    ops = op_details(content)
    names = {op.op_name for op in ops}
    assert {"CONV_2D", "FULLY_CONNECTED"} <= names
    kernels = _weight_dtypes(content, {"CONV_2D", "FULLY_CONNECTED"})
    if mode == "float32":
        assert kernels == {"float32"}
    elif mode == "float16":
        # Weights are stored as float16 and dequantized once at load time.
        assert any(
            op.op_name == "DEQUANTIZE" and op.input_dtypes == ("float16",)
            for op in ops
        )
    elif mode == "dynamic":
        # Float activations, int8 weights (for weights >= 1024 values).
        assert "int8" in kernels
        assert all(
            op.input_dtypes[0] == "float32"
            for op in ops
            if op.op_name in ("CONV_2D", "FULLY_CONNECTED")
        )
    elif mode == "int16x8":
        # int16 activations in and out of every kernel, int8 weights, and
        # float32 at the file's edges.
        integer_kernels = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
        for op in ops:
            if op.op_name in integer_kernels:
                assert op.input_dtypes[:2] == ("int16", "int8"), (kind, op)
                assert op.output_dtypes == ("int16",), (kind, op)
        assert not any(
            "float32" in op.input_dtypes + op.output_dtypes
            for op in ops
            if op.op_name not in ("QUANTIZE", "DEQUANTIZE")
        )
        interpreter = Interpreter(model_content=content)
        assert interpreter.get_input_details()[0]["dtype"] == np.float32
        assert interpreter.get_output_details()[0]["dtype"] == np.float32
    else:
        integer_kernels = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
        for op in ops:
            if op.op_name in integer_kernels:
                assert op.input_dtypes[:2] == ("int8", "int8"), (kind, op)
                assert op.output_dtypes == ("int8",), (kind, op)
        if kind == "functional":
            assert "DEPTHWISE_CONV_2D" in names
        interpreter = Interpreter(model_content=content)
        input_dtype = interpreter.get_input_details()[0]["dtype"]
        output_dtype = interpreter.get_output_details()[0]["dtype"]
        if int8_io:
            assert (input_dtype, output_dtype) == (np.int8, np.int8)
            assert "QUANTIZE" not in names
        else:
            assert (input_dtype, output_dtype) == (np.float32, np.float32)


@pytest.fixture(scope="module")
def pruned_cnn():
    """A small CNN with 80 % of every kernel zeroed by magnitude."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    dense_weights = model.get_weights()
    pruned = []
    for weight in dense_weights:
        if weight.ndim >= 2:
            threshold = np.quantile(np.abs(weight), 0.8)
            weight = np.where(np.abs(weight) <= threshold, 0.0, weight)
        pruned.append(weight.astype("float32"))
    model.set_weights(pruned)
    x = np.random.default_rng(0).random((16, 16, 16, 3), dtype="float32")
    return model, x


@pytest.fixture(scope="module")
def sparse_files(pruned_cnn):
    model, _ = pruned_cnn
    return {
        "sparse": to_tflite(model, sparse=True),
        "dense": to_tflite(model, sparse=False),
        "auto": to_tflite(model),
    }


def test_sparse_file_is_smaller_with_equal_outputs(pruned_cnn, sparse_files):
    model, x = pruned_cnn
    assert kernel_sparsity(model) == pytest.approx(0.8, abs=0.01)
    sparse, dense = sparse_files["sparse"], sparse_files["dense"]
    assert len(sparse) < 0.6 * len(dense), (len(sparse), len(dense))
    expected = model.predict(x, verbose=0)
    assert np.max(np.abs(run_tflite(sparse, x) - expected)) < 1e-5
    assert np.max(np.abs(run_tflite(dense, x) - expected)) < 1e-5
    assert any(op.op_name == "DENSIFY" for op in op_details(sparse))
    assert not any(op.op_name == "DENSIFY" for op in op_details(dense))


def test_auto_sparse_picks_sparse_for_pruned_model(sparse_files):
    assert len(sparse_files["auto"]) == len(sparse_files["sparse"])
    ops = op_details(sparse_files["auto"])
    assert any(op.op_name == "DENSIFY" for op in ops)


def test_auto_sparse_keeps_dense_model_dense():
    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(40)])
    assert kernel_sparsity(model) < 0.5
    ops = op_details(to_tflite(model))
    assert not any(op.op_name == "DENSIFY" for op in ops)


@pytest.mark.parametrize("mode", ["dynamic", "int8"])
def test_sparse_quantized_file_runs(pruned_cnn, mode):
    # XNNPACK refuses int8 weights in sparse format (at allocation or at the
    # first invoke); run_tflite falls back to the builtin kernels.
    model, x = pruned_cnn
    content = to_tflite(
        model,
        mode,
        sparse=True,
        representative_data=x if mode == "int8" else None,
    )
    assert any(op.op_name == "DENSIFY" for op in op_details(content))
    expected = model.predict(x, verbose=0)
    diff = np.max(np.abs(run_tflite(content, x) - expected))
    rtol = DYNAMIC_RTOL if mode == "dynamic" else INT8_RTOL
    assert diff < rtol * np.ptp(expected)


def _tiny_dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, activation="relu")]
    )


def _calibration_forms():
    x = np.random.default_rng(0).random((40, 8), dtype="float32")
    y = np.zeros(40, "int64")

    def batches():
        for i in range(0, 40, 10):
            yield [x[i : i + 10]]

    def endless_samples():
        # The cap on calibration samples ends this generator.
        while True:
            yield x[0]

    return {
        "array": x,
        "tuple_x": (x,),
        "tuple_xy": (x, y),
        "dataset_batched": tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        "dataset_unbatched": tf.data.Dataset.from_tensor_slices(x),
        "generator_batches": batches,
        "generator_endless": endless_samples,
    }


@pytest.mark.parametrize("form", sorted(_calibration_forms()))
def test_calibration_data_forms(form):
    model = _tiny_dense_model()
    data = _calibration_forms()[form]
    content = to_tflite(
        model, "int8", representative_data=data, num_calibration_samples=20
    )
    assert "int8" in _weight_dtypes(content, {"FULLY_CONNECTED"})


def test_subclassed_calibration_shape_is_checked():
    # Subclassed models have no `inputs`; the exported signature is used.
    with pytest.raises(ValueError, match=r"\(5, 5, 3\).*\(12, 12, 3\)"):
        to_tflite(
            subclassed_model(),
            "int8",
            representative_data=np.zeros((4, 5, 5, 3), "float32"),
        )


def test_unknown_mode_lists_modes():
    with pytest.raises(
        ValueError, match="float32, float16, dynamic, int8, int16x8"
    ):
        to_tflite(_tiny_dense_model(), "int4")


def test_int8_without_data_asks_for_representative_data():
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(_tiny_dense_model(), "int8")


def test_int8_io_needs_int8_mode():
    with pytest.raises(ValueError, match="int8_io"):
        to_tflite(_tiny_dense_model(), "float32", int8_io=True)


def test_wrong_calibration_shape_names_both_shapes():
    model = keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    data = np.zeros((10, 8, 8, 3), "float32")
    with pytest.raises(ValueError) as info:
        to_tflite(model, "int8", representative_data=data)
    assert "(8, 8, 3)" in str(info.value)
    assert "(12, 12, 3)" in str(info.value)


def test_missing_folder_fails_before_conversion(tmp_path, monkeypatch):
    model = _tiny_dense_model()

    def no_export(*args, **kwargs):
        raise AssertionError("the model was exported")

    monkeypatch.setattr(model, "export", no_export)
    path = tmp_path / "missing" / "model.tflite"
    start = time.perf_counter()
    with pytest.raises(ValueError, match="does not exist"):
        to_tflite(model, path=path)
    assert time.perf_counter() - start < 1.0
    assert not path.parent.exists()


def test_unwritable_folder_fails_before_conversion(tmp_path, monkeypatch):
    from keras_compress.convert import _files

    model = _tiny_dense_model()

    def no_export(*args, **kwargs):
        raise AssertionError("the model was exported")

    def refuse(*args, **kwargs):
        # Root ignores permission bits: make the probe's write fail.
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(model, "export", no_export)
    monkeypatch.setattr(_files.tempfile, "TemporaryFile", refuse)
    with pytest.raises(ValueError, match="cannot be written.*Read-only"):
        to_tflite(model, path=tmp_path / "model.tflite")


def test_path_gets_the_returned_bytes(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")
    content = to_tflite(_tiny_dense_model(), path=path)
    assert path.read_bytes() == content
    assert os.listdir(tmp_path) == ["model.tflite"]  # no temporary left
    np.testing.assert_allclose(
        run_tflite(str(path), np.ones((3, 8), "float32")),
        run_tflite(content, np.ones((3, 8), "float32")),
    )


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        to_tflite(_tiny_dense_model(), path=path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.tflite"]


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_calibration_data_is_refused(bad):
    # One inf used to crash the converter's process ("scale out of
    # expressed type range"); NaN gave a float file without a word.
    x = np.ones((16, 8), "float32")
    x[3, 2] = bad
    with pytest.raises(ValueError, match="non-finite.*sample 3"):
        to_tflite(_tiny_dense_model(), "int8", representative_data=x)


def test_all_zero_calibration_data_warns():
    with pytest.warns(UserWarning, match="every value is zero"):
        to_tflite(
            _tiny_dense_model(),
            "int8",
            representative_data=np.zeros((16, 8), "float32"),
        )


def test_sparsity_below_the_sparse_format_threshold_warns():
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    kernel = model.layers[0].kernel
    values = np.ones(kernel.shape, "float32")
    values[:20] = 0.0  # 31 % zeros, as an unfinished pruning schedule
    kernel.assign(values)
    with pytest.warns(UserWarning, match="31% zeros, below the 50%"):
        content = to_tflite(model)
    assert content == to_tflite(model, sparse=False)  # stored dense


def test_unsupported_op_is_named_with_a_fix():
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(tf.math.bessel_i1e)(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(RuntimeError) as info:
        to_tflite(model)
    message = str(info.value)
    assert "BesselI1e" in message
    assert "allow_select_tf_ops=True" in message


def test_dynamic_warns_when_nothing_is_quantized():
    # Every weight has fewer than 1024 values, which the converter skips.
    with pytest.warns(UserWarning, match="1024"):
        to_tflite(_tiny_dense_model(), "dynamic")


def test_int16x8_without_data_asks_for_representative_data():
    with pytest.raises(ValueError, match="int16x8.*representative_data"):
        to_tflite(_tiny_dense_model(), "int16x8")


def test_int8_without_data_uses_fake_quant_ranges():
    # A model with fake-quant ops (as quantization-aware training leaves
    # it) needs no calibration data for full-integer kernels.
    model = fake_quant_model()
    content = to_tflite(model, "int8")
    kernels = [
        op for op in op_details(content) if op.op_name == "FULLY_CONNECTED"
    ]
    assert len(kernels) == 2
    for op in kernels:
        assert op.input_dtypes[:2] == ("int8", "int8"), op
        assert op.output_dtypes == ("int8",), op
    x = np.random.default_rng(0).normal(size=(20, 16)).astype("float32")
    diff = np.abs(run_tflite(content, x) - model.predict(x, verbose=0))
    # Same 8-bit grids as the fake-quant ops; LiteRT requantizes with
    # integer multipliers, so a few outputs land a step or two (16 / 255)
    # away.
    assert np.max(diff) <= 3 * 16 / 255 + 1e-6


@pytest.fixture(scope="module")
def keras_quantized_files(trained_model, toy_train):
    """A model after Keras's `quantize("int8")` and its dynamic file."""
    kind, model = trained_model
    quantized = keras_quantized(model)
    return kind, quantized, to_tflite(quantized, "dynamic")


def _int8_constants(content):
    """The rank-2 int8 constant tensors (kernels) of a LiteRT file."""
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    values = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) == 2:
            try:
                values.append(interpreter.get_tensor(detail["index"]))
            except ValueError:
                pass  # an activation, not a constant
    return values


def test_keras_quantized_model_converts_with_its_int8_kernels(
    keras_quantized_files, toy_test
):
    kind, quantized, content = keras_quantized_files
    x, _ = toy_test
    # LiteRT quantizes the dequantized kernels again, per output channel,
    # and gets Keras's own integers back. (The converter leaves weights
    # under 1024 values, here the last Dense, in float32.)
    big_kernels = [
        keras.ops.convert_to_numpy(v)
        for v in quantized.weights
        if v.dtype == "int8" and np.prod(v.shape) >= 1024
    ]
    assert big_kernels, kind
    constants = _int8_constants(content)
    for kernel in big_kernels:
        assert any(np.array_equal(kernel.T, c) for c in constants), kind
    # Keras quantizes activations per sample to [-127, 127] (abs-max);
    # LiteRT's dynamic-range kernels per sample too, but asymmetrically, to
    # [-128, 127]. Both round each activation by at most half a step of
    # 1/254 of its range, so the outputs differ like two dynamic-range
    # files: observed <= 1.5 % of the output range, bound 3 %.
    expected = quantized.predict(x, verbose=0)
    actual = run_tflite(content, x)
    assert np.max(np.abs(actual - expected)) < DYNAMIC_RTOL * np.ptp(expected)
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) >= 0.97


def test_keras_quantized_model_to_float_file_warns():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(40)])
    quantized = keras_quantized(model)
    with pytest.warns(UserWarning, match="mode='dynamic'"):
        content = to_tflite(quantized, "float32")
    assert _weight_dtypes(content, {"FULLY_CONNECTED"}) == {"float32"}
    # The float kernel is Keras's dequantized one: outputs match the float
    # model up to the int8 rounding of the weights (and Keras's activation
    # quantization), never worse than dynamic range.
    x = np.random.default_rng(0).random((8, 40), dtype="float32")
    expected = quantized.predict(x, verbose=0)
    diff = np.max(np.abs(run_tflite(content, x) - expected))
    assert diff < DYNAMIC_RTOL * np.ptp(expected)


class _FeedForward(keras.layers.Layer):
    """A KerasHub-style block: a custom layer made of layers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization()
        self.dense = keras.layers.Dense(32, activation="relu")

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.dense.build(input_shape)

    def call(self, inputs):
        return inputs + self.dense(self.norm(inputs))


def test_keras_quantized_language_model_with_a_tied_head():
    # Keras's `quantize("int8")` of a causal LM whose head is its token
    # embedding reversed (KerasHub's GPT-2): one int8 table, which the
    # file keeps (as a GATHER table and, transposed, as the head's kernel),
    # and int8 kernels inside its custom blocks.
    keras.utils.set_random_seed(0)
    model = helpers.tied_language_model(64, 32, 6, _FeedForward(name="block"))
    backbone = model.get_layer("backbone")
    embedding = backbone.get_layer("token_embedding")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # InputLayer
        model.quantize("int8")
    content = to_tflite(model, "dynamic")
    table = keras.ops.convert_to_numpy(embedding.embeddings)
    block_kernel = keras.ops.convert_to_numpy(
        backbone.get_layer("block").dense.kernel
    )
    assert table.dtype == block_kernel.dtype == np.int8
    constants = _int8_constants(content)
    assert any(np.array_equal(table, c) for c in constants)
    assert any(np.array_equal(block_kernel.T, c) for c in constants)
    x = np.random.default_rng(0).integers(0, 64, (16, 6)).astype("int32")
    expected = model.predict(x, verbose=0)
    actual = run_tflite(content, x)
    assert np.max(np.abs(actual - expected)) < DYNAMIC_RTOL * np.ptp(expected)
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) >= 0.9


def test_keras_int4_model_is_refused_with_a_fix():
    model = _tiny_dense_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.quantize("int4")
    with pytest.raises(ValueError, match=r"quantize\('int4'\).*'int8'"):
        to_tflite(model, "dynamic")


def test_non_numeric_calibration_data_names_dtype_and_shape():
    data = np.array([["a"] * 8] * 4)
    with pytest.raises(ValueError) as info:
        to_tflite(_tiny_dense_model(), "int8", representative_data=data)
    message = str(info.value)
    assert "<U1" in message and "(4, 8)" in message
    assert "float32" in message and "(None, 8)" in message


@pytest.mark.parametrize("verbose", [0, 1])
def test_calibration_progress_bar(verbose, capsys):
    x = np.random.default_rng(0).random((30, 8), dtype="float32")
    to_tflite(
        _tiny_dense_model(),
        "int8",
        representative_data=x,
        num_calibration_samples=25,
        verbose=verbose,
    )
    out = capsys.readouterr().out
    if verbose:
        assert "Calibrating" in out and "25/25" in out
    else:
        assert "Calibrating" not in out and "25/25" not in out


def _two_input_model(num_outputs):
    keras.utils.set_random_seed(0)
    image = keras.Input((6, 6, 2), name="image")
    extra = keras.Input((3,), name="extra")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.Concatenate()([keras.layers.Flatten()(x), extra])
    outputs = [keras.layers.Dense(i + 1)(x) for i in range(num_outputs)]
    return keras.Model([image, extra], outputs)


def _two_inputs(batch=5):
    rng = np.random.default_rng(0)
    return [
        rng.random((batch, 6, 6, 2), dtype="float32"),
        rng.random((batch, 3), dtype="float32"),
    ]


def test_several_inputs_and_outputs_keep_the_models_order():
    # Twelve outputs: sorted by name, "output_10" would come before
    # "output_2" (outputs of different widths make any mix-up fail).
    model = _two_input_model(12)
    content = to_tflite(model)
    inputs = _two_inputs()
    expected = model.predict(inputs, verbose=0)
    actual = run_tflite(content, inputs)
    assert [a.shape for a in actual] == [e.shape for e in expected]
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=1e-5)

    # The signature, as `Model.export` files have it, runs by name.
    interpreter = Interpreter(model_content=content)
    [(key, signature)] = interpreter.get_signature_list().items()
    assert key == "serving_default"
    assert sorted(signature["inputs"]) == ["extra", "image"]
    runner = interpreter.get_signature_runner(key)
    named = runner(image=inputs[0][:1], extra=inputs[1][:1])
    np.testing.assert_allclose(named["output_10"], expected[10][:1], atol=1e-5)


def test_dict_inputs_and_outputs_keep_their_names():
    model = dict_io_model()
    content = to_tflite(model)
    image_batch, extra_batch = _two_inputs()
    expected = model.predict({"image": image_batch, "extra": extra_batch})
    # The file's inputs in `model.inputs` order (a dict's: by key).
    assert [t.name for t in model.inputs] == ["extra", "image"]
    logits, score = run_tflite(content, [extra_batch, image_batch])
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-5)
    np.testing.assert_allclose(score, expected["score"], atol=1e-5)
    # Or the dict the Keras model takes, matched by name.
    by_name = run_tflite(content, {"image": image_batch, "extra": extra_batch})
    np.testing.assert_allclose(by_name[0], logits)
    with pytest.raises(ValueError, match=r"\['extra', 'img'\].*'image'"):
        run_tflite(content, {"img": image_batch, "extra": extra_batch})
    signature = Interpreter(model_content=content).get_signature_list()
    assert signature["serving_default"]["outputs"] == ["logits", "score"]


def test_unsupported_op_error_names_the_layer():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4)(inputs)
    outputs = keras.layers.Lambda(tf.math.bessel_i1e, name="bessel")(x)
    with pytest.raises(RuntimeError, match=r"BesselI1e \(layer 'bessel'"):
        to_tflite(keras.Model(inputs, outputs))


def test_int8_warns_when_qat_ranges_were_never_learned():
    from keras_compress import quantization

    model = quantization.quantize_model(_tiny_dense_model())
    with pytest.warns(UserWarning, match="never learned.*Train the model"):
        to_tflite(model, "int8")
    # After one training step every observer has a range: no warning.
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model.fit(x, x[:, :4], epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        to_tflite(model, "int8")


def test_qat_int8_keeps_its_ranges_whatever_the_calibration_data():
    # Calibration would replace ranges the model trained with; the file
    # must compute what the QAT model computes.
    from keras_compress import quantization

    model = quantization.quantize_model(_tiny_dense_model())
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model.fit(x, x[:, :4], epochs=1, verbose=0)
    far_off = 50.0 * x  # data that would calibrate very different ranges
    assert to_tflite(model, "int8") == to_tflite(
        model, "int8", representative_data=far_off
    )
    with pytest.raises(ValueError, match="shape"):
        to_tflite(model, "int8", representative_data=x[:, :3])


def test_integer_files_stay_dense_unless_asked(pruned_cnn):
    model, x = pruned_cnn
    assert kernel_sparsity(model) >= 0.5
    content = to_tflite(model, "int8", representative_data=x)
    assert not any(op.op_name == "DENSIFY" for op in op_details(content))


def test_sparse_integer_refuses_a_shallow_dense_layer():
    # LiteRT's sparse int8 FULLY_CONNECTED is wrong below depth 16.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(8, name="shallow")]
    )
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.arange(96).reshape(12, 8) % 2, kernel, 0.0))
    x = np.random.default_rng(0).normal(size=(50, 12)).astype("float32")
    with pytest.raises(ValueError, match="'shallow'.*input depth of 12"):
        to_tflite(model, "int8", sparse=True, representative_data=x)
    dense = to_tflite(model, "int8", sparse=None, representative_data=x)
    expected = model.predict(x, verbose=0)
    diff = np.max(np.abs(run_tflite(dense, x) - expected))
    assert diff < INT8_RTOL * np.ptp(expected)


def _token_lstm(steps, bidirectional=False):
    inputs = keras.Input((steps,), dtype="int32")
    x = keras.layers.Embedding(20, 8)(inputs)
    if bidirectional:
        x = keras.layers.Bidirectional(keras.layers.LSTM(8), name="lstm")(x)
    else:
        x = keras.layers.LSTM(8, name="lstm")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.mark.parametrize(
    "mode, bidirectional",
    [("float32", False), ("int8", False), ("float32", True)],
)
def test_lstm_with_a_known_length_converts_unrolled(mode, bidirectional):
    model = _token_lstm(steps=6, bidirectional=bidirectional)
    x = np.random.default_rng(0).integers(0, 20, size=(32, 6)).astype("int32")
    options = {"representative_data": x} if mode == "int8" else {}
    content = to_tflite(model, mode, verbose=0, **options)
    ops = {op.op_name for op in op_details(content)}
    assert "WHILE" not in ops  # the loop is unrolled, batch stays dynamic
    expected = model.predict(x, verbose=0)
    diff = np.abs(run_tflite(content, x) - expected).max()
    assert diff <= (1e-5 if mode == "float32" else 0.05), diff
    # Unrolled only while exporting: the user's layer is unchanged.
    layer = model.get_layer("lstm")
    for rnn in (
        (layer.forward_layer, layer.backward_layer)
        if bidirectional
        else (layer,)
    ):
        assert rnn.unroll is False


def test_lstm_of_unknown_length_error_says_to_fix_the_length():
    model = _token_lstm(steps=None)
    with pytest.raises(RuntimeError, match="'lstm'.*fixed sequence length"):
        to_tflite(model, "float32", verbose=0)
    assert model.get_layer("lstm").unroll is False


def test_integer_only_file_is_integer_end_to_end_or_refused(tmp_path):
    from keras_compress import quantization

    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    qat = quantization.quantize_model(_tiny_dense_model())
    qat(x, training=True)
    content = to_tflite(qat, "int8", integer_only=True)
    interpreter = Interpreter(model_content=content)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert float_ops(content) == ()

    # ELU has no int8 kernel in LiteRT: it stays float in the file, which
    # is refused, and nothing is written.
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, activation="elu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        island = quantization.quantize_model(model)
    island(x, training=True)
    path = tmp_path / "npu.tflite"
    with pytest.raises(ValueError, match=r"integer_only=True.*ELU x1"):
        to_tflite(island, "int8", integer_only=True, path=str(path))
    assert not path.exists()
    with pytest.raises(ValueError, match="integer_only=True.*needs.*int8"):
        to_tflite(_tiny_dense_model(), "float32", integer_only=True)
