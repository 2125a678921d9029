"""Tests of `verify` and the interpreter helpers it is built on."""

import gzip
import json

import keras
import numpy as np
import pytest

from keras_compress.convert import VerificationReport
from keras_compress.convert import file_sizes
from keras_compress.convert import measure_latency
from keras_compress.convert import measure_onnx_latency
from keras_compress.convert import op_details
from keras_compress.convert import run_tflite
from keras_compress.convert import to_onnx
from keras_compress.convert import to_tflite
from keras_compress.convert import verify
from keras_compress.convert.verify import float_ops as verify_float_ops
from tests.convert.conftest import functional_model
from tests.convert.conftest import trained


@pytest.fixture(scope="module")
def model_and_files(toy_train):
    keras.utils.set_random_seed(0)
    model = trained(functional_model(), *toy_train)
    x_train, _ = toy_train
    return (
        model,
        to_tflite(model),
        to_tflite(model, "int8", representative_data=x_train, int8_io=True),
    )


def test_float32_report(model_and_files, toy_test):
    model, float32_file, _ = model_and_files
    x, y = toy_test
    report = verify(model, float32_file, x, y, latency_runs=20)
    assert isinstance(report, VerificationReport)
    expected_accuracy = np.mean(model.predict(x, verbose=0).argmax(-1) == y)
    assert report.keras_accuracy == pytest.approx(expected_accuracy)
    assert report.file_accuracy == report.keras_accuracy
    assert report.keras_accuracy > 0.9  # the toy problem was learned
    assert report.agreement == 1.0
    assert report.max_abs_diff < 1e-5
    assert report.bytes == len(float32_file)
    assert report.gzip_bytes == len(gzip.compress(float32_file, 9))
    assert 0 < report.latency_s < 0.1
    assert report.num_samples == len(x)
    text = str(report)
    assert f"{report.bytes:,} bytes" in text
    assert "accuracy" in text and "agreement" in text


def test_int8_io_report(model_and_files, toy_test):
    model, _, int8_file = model_and_files
    x, y = toy_test
    report = verify(model, int8_file, x, y, latency_runs=0)
    assert report.latency_s is None
    assert report.agreement >= 0.97
    assert abs(report.file_accuracy - report.keras_accuracy) <= 0.03
    assert "not measured" in str(report)


def test_without_labels_and_with_one_hot_labels(model_and_files, toy_test):
    model, float32_file, _ = model_and_files
    x, y = toy_test
    report = verify(model, float32_file, x, latency_runs=0)
    assert report.keras_accuracy is None and report.file_accuracy is None
    assert "n/a" in str(report)
    one_hot = np.eye(4)[y]
    report = verify(model, float32_file, x, one_hot, latency_runs=0)
    assert report.keras_accuracy > 0.9


def test_report_is_frozen(model_and_files, toy_test):
    model, float32_file, _ = model_and_files
    x, _ = toy_test
    report = verify(model, float32_file, x[:4], latency_runs=0)
    with pytest.raises(AttributeError):
        report.bytes = 0


def test_label_count_mismatch(model_and_files, toy_test):
    model, float32_file, _ = model_and_files
    x, y = toy_test
    with pytest.raises(ValueError, match="labels"):
        verify(model, float32_file, x, y[:5], latency_runs=0)


@pytest.mark.parametrize(
    "x, y, match",
    [
        ("empty", None, "`x` is empty"),
        ("nan", None, "`x` holds .* non-finite"),
        ("ok", "out of range", r"labels from 0 to 9.*\[0, 3\]"),
    ],
)
def test_bad_data_is_refused_before_running(
    model_and_files, toy_test, x, y, match
):
    model, float32_file, _ = model_and_files
    inputs, labels = toy_test
    if x == "empty":
        inputs = inputs[:0]
    elif x == "nan":
        inputs = np.where(
            np.arange(inputs.size).reshape(inputs.shape) == 5, np.nan, inputs
        )
    if y is not None:
        labels = np.arange(len(inputs)) % 10
    with pytest.raises(ValueError, match=match):
        verify(model, float32_file, inputs, labels, latency_runs=0)


def test_run_tflite_batches_give_the_same_outputs(model_and_files, toy_test):
    _, float32_file, int8_file = model_and_files
    x, _ = toy_test
    for content in (float32_file, int8_file):
        whole = run_tflite(content, x)
        np.testing.assert_allclose(
            run_tflite(content, x, batch_size=7), whole, atol=1e-6
        )
        np.testing.assert_allclose(
            run_tflite(content, x[:3], batch_size=1), whole[:3], atol=1e-6
        )


def test_file_sizes_and_latency(model_and_files):
    _, float32_file, _ = model_and_files
    raw, gzipped = file_sizes(float32_file)
    assert raw == len(float32_file)
    assert 0 < gzipped < raw
    assert measure_latency(float32_file, num_runs=5, num_warmup=1) > 0


@pytest.fixture(scope="module")
def onnx_file(model_and_files):
    model, _, _ = model_and_files
    return to_onnx(model)


def test_onnx_report(model_and_files, onnx_file, toy_test, tmp_path):
    model, _, _ = model_and_files
    x, y = toy_test
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_file)
    report = verify(model, str(path), x, y, latency_runs=20, num_threads=2)
    assert report.file_format == "onnx"
    assert report.num_threads == 2
    assert report.agreement == 1.0
    assert report.file_accuracy == report.keras_accuracy > 0.9
    assert report.max_abs_diff < 1e-5
    assert 0 <= report.mean_abs_diff <= report.max_abs_diff
    assert report.bytes == len(onnx_file)
    assert 0 < report.latency_s < 0.1
    assert report.float_ops is None  # only reported for LiteRT files
    assert report.as_dict()["float_ops"] is None
    text = str(report)
    assert "float ops    n/a" in text
    assert "onnx file" in text and "ONNX Runtime" in text
    assert "2 threads" in text and "mean |diff|" in text


def test_as_dict_has_every_field(model_and_files, toy_test):
    model, float32_file, _ = model_and_files
    x, y = toy_test
    report = verify(model, float32_file, x, y, latency_runs=0)
    data = report.as_dict()
    assert data["file_format"] == "tflite"
    assert data["max_abs_diff"] == report.max_abs_diff
    assert set(data) == {
        "keras_accuracy",
        "file_accuracy",
        "agreement",
        "max_abs_diff",
        "mean_abs_diff",
        "bytes",
        "gzip_bytes",
        "latency_s",
        "num_samples",
        "file_format",
        "num_threads",
        "float_ops",
        "weights",
    }
    assert isinstance(data["float_ops"], list)
    # One entry per weight tensor of the file, with its stored type.
    assert [w["dtype"] for w in data["weights"]] == [
        w.dtype for w in report.weights
    ]
    assert all(w["dtype"] == "float32" for w in data["weights"])
    assert json.loads(json.dumps(data)) == data


def test_float_ops(model_and_files, toy_test):
    model, float32_file, int8_file = model_and_files
    x, _ = toy_test
    # A float file computes everything in float, in execution order.
    report = verify(model, float32_file, x[:8], latency_runs=0)
    names = [op.op_name for op in op_details(float32_file)]
    assert list(report.float_ops) == names
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(report.float_ops)
    assert "float ops    " in str(report) and "CONV_2D x" in str(report)
    # A full-integer file: nothing left in float.
    report = verify(model, int8_file, x[:8], latency_runs=0)
    assert report.float_ops == ()
    assert "none (integer kernels only)" in str(report)
    # Dynamic range: int8 weights, float activations: the kernels compute
    # in float; the DEQUANTIZE ops of the weights are not listed.
    dynamic = to_tflite(model, "dynamic")
    found = verify_float_ops(dynamic)
    assert "FULLY_CONNECTED" in found and "DEQUANTIZE" not in found
    assert "QUANTIZE" not in verify_float_ops(int8_file)


def test_unknown_file_format(model_and_files, toy_test):
    model, _, _ = model_and_files
    x, _ = toy_test
    with pytest.raises(ValueError, match="neither a LiteRT.*nor an ONNX"):
        verify(model, b"\x00" * 64, x, latency_runs=0)
    with pytest.raises(TypeError, match="bytes of a converted file"):
        verify(model, 12, x, latency_runs=0)


def test_onnx_latency(onnx_file):
    assert measure_onnx_latency(onnx_file, num_runs=5, num_warmup=1) > 0
