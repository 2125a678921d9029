"""Verification of a converted file against the Keras model it came from."""

import collections
import dataclasses

import keras
import numpy as np

from keras_compress import data_checks
from keras_compress.convert import _files
from keras_compress.convert import flatbuffer
from keras_compress.convert import interpreter


@dataclasses.dataclass(frozen=True)
class VerificationReport:
    """How a converted LiteRT or ONNX file compares with its Keras model.

    Attributes:
        keras_accuracy: Accuracy of the Keras model on the labels, or
            `None` when no labels were given.
        file_accuracy: Accuracy of the file on the labels, or `None`.
        agreement: Fraction of samples where the file's predicted class
            equals the Keras model's.
        max_abs_diff: Largest absolute difference between the Keras outputs
            and the file's (dequantized) outputs.
        mean_abs_diff: Mean absolute difference over all output values.
        bytes: Size of the file.
        gzip_bytes: Size of the file after gzip level 9.
        latency_s: Median single-sample latency in seconds, or `None` when
            latency was not measured.
        num_samples: Number of samples compared.
        file_format: `"tflite"` or `"onnx"`.
        num_threads: Threads of the interpreter or ONNX Runtime session
            that ran the file and timed it.
        float_ops: For a LiteRT file, the names of its operators that
            compute in floating point (a float32 or float16 input or
            output), in execution order; `()` for a file with integer
            kernels only. QUANTIZE and DEQUANTIZE ops (conversions, for
            instance of a float input or output) are left out. `None` for
            ONNX files.
        weights: For a LiteRT file, every weight tensor as stored
            (`WeightTensor`: layer, type such as int4 or int8, granularity,
            integer/dynamic/float compute, bytes), read from the
            flatbuffer; `None` for ONNX files.
    """

    keras_accuracy: float | None
    file_accuracy: float | None
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    bytes: int
    gzip_bytes: int
    latency_s: float | None
    num_samples: int
    file_format: str
    num_threads: int | None
    float_ops: tuple | None = None
    weights: tuple | None = None

    def as_dict(self):
        """The report as a plain `dict` (e.g. for `json.dump`)."""
        data = dataclasses.asdict(self)
        if self.float_ops is not None:
            data["float_ops"] = list(self.float_ops)
        if self.weights is not None:
            data["weights"] = [
                {**dataclasses.asdict(w), "shape": list(w.shape)}
                for w in self.weights
            ]
        return data

    def __str__(self):
        def percent(value):
            return "n/a" if value is None else f"{value:.2%}"

        threads = (
            ""
            if self.num_threads is None
            else (f", {self.num_threads} thread{'s' * (self.num_threads != 1)}")
        )
        latency = (
            "not measured"
            if self.latency_s is None
            else f"{self.latency_s * 1e3:.3f} ms (median, batch 1{threads})"
        )
        runtime = "LiteRT" if self.file_format == "tflite" else "ONNX Runtime"
        return "\n".join(
            [
                f"Verification on {self.num_samples} samples "
                f"({self.file_format} file, run with {runtime})",
                f"  accuracy     keras {percent(self.keras_accuracy)}, "
                f"file {percent(self.file_accuracy)}",
                f"  agreement    {percent(self.agreement)} (same class)",
                f"  max |diff|   {self.max_abs_diff:.3g}",
                f"  mean |diff|  {self.mean_abs_diff:.3g}",
                f"  size         {self.bytes:,} bytes "
                f"({self.gzip_bytes:,} gzipped)",
                f"  latency      {latency}",
                f"  float ops    {_describe_float_ops(self.float_ops)}",
                f"  weights      {flatbuffer.describe(self.weights)}",
            ]
        )


def _describe_float_ops(float_ops):
    """`float_ops` for the table: a count and the names with repeats."""
    if float_ops is None:
        return "n/a"
    if not float_ops:
        return "none (integer kernels only)"
    counts = collections.Counter(float_ops)
    names = ", ".join(
        name if count == 1 else f"{name} x{count}"
        for name, count in counts.items()
    )
    return f"{len(float_ops)} ({names})"


def float_ops(model_content):
    """The operators of a LiteRT file that compute in floating point.

    An operator counts if any of its inputs or outputs is float32 or
    float16. SHAPE reads only dimensions and is left out; QUANTIZE and
    DEQUANTIZE are conversions, not computation, and are left out too:
    in a quantized file they convert a float input or output, or surround
    a float island whose ops are listed.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.

    Returns:
        A tuple of op names in execution order, e.g. `("MEAN", "RSQRT")`;
        empty for a file that runs integer kernels only.

    Example:

    ```python
    blob = keras_compress.convert.to_tflite(qat_model, "int8")
    assert float_ops(blob) == ()
    ```
    """
    found = []
    for op in interpreter.op_details(model_content):
        if op.op_name in _NOT_COMPUTE:
            continue
        dtypes = op.input_dtypes + op.output_dtypes
        if any(dtype in _FLOAT_DTYPES for dtype in dtypes):
            found.append(op.op_name)
    return tuple(found)


_FLOAT_DTYPES = ("float32", "float16")
# Conversions, and SHAPE, which reads a tensor's dimensions, not its values
# (ai-edge-quantizer leaves it on the float tensor of a Flatten).
_NOT_COMPUTE = ("QUANTIZE", "DEQUANTIZE", "SHAPE")


def verify(
    keras_model,
    model_content,
    x,
    y=None,
    *,
    batch_size=256,
    latency_runs=300,
    num_threads=1,
    providers=None,
):
    """Runs a converted file and compares it with its Keras model.

    Both models predict `x`; the report gives the largest and mean output
    difference, how often they predict the same class, their accuracies on
    `y`, the file size and its single-sample latency. The file may be a
    LiteRT flatbuffer (run with the LiteRT interpreter) or an ONNX model
    (run with ONNX Runtime); the format is read from its content.

    Args:
        keras_model: The Keras model the file was converted from (a
            single-output model).
        model_content: The file's bytes or a path to a `.tflite` or
            `.onnx` file.
        x: Inputs, batch first (a list of arrays, or a dict by input
            name, for several inputs).
        y: Optional integer class labels (one-hot labels are accepted).
        batch_size: Batch size for both models.
        latency_runs: Timed single-sample runs; 0 skips the measurement.
        num_threads: Threads of the LiteRT interpreter or of ONNX
            Runtime (intra-op), for the outputs and the latency. `None`
            uses the runtime's default.
        providers: ONNX Runtime execution providers (ignored for LiteRT
            files); `None` uses every available one.

    Returns:
        A `VerificationReport`.

    Example:

    ```python
    blob = keras_compress.convert.to_tflite(model, "dynamic")
    print(keras_compress.convert.verify(model, blob, x_test, y_test))
    ```
    """
    content = _files.read_model_bytes(model_content)
    data_checks.check_inputs(x, "x")
    labels = None
    if y is not None:
        first = keras.tree.flatten(x)[0]
        labels = data_checks.check_labels(
            y, "y", len(first), data_checks.num_classes(keras_model)
        )
    file_format = _files.detect_format(content)
    if file_format == _files.ONNX:
        from keras_compress.convert import onnx

        def run(data, size):
            return onnx.run_onnx(
                content, data, size, num_threads, providers=providers
            )

        def time_one(sample, runs):
            return onnx.measure_onnx_latency(
                content,
                sample,
                num_runs=runs,
                num_warmup=min(30, runs),
                num_threads=num_threads,
                providers=providers,
            )
    else:

        def run(data, size):
            return interpreter.run_tflite(content, data, size, num_threads)

        def time_one(sample, runs):
            return interpreter.measure_latency(
                content,
                sample,
                num_runs=runs,
                num_warmup=min(30, runs),
                num_threads=num_threads,
            )

    keras_out = keras_model.predict(x, batch_size=batch_size, verbose=0)
    file_out = run(x, batch_size)
    if isinstance(keras_out, (list, tuple, dict)) or isinstance(file_out, list):
        raise ValueError(
            "`verify` compares single-output models; this model or file "
            "has several outputs. Compare them one by one with "
            "`run_tflite` or `run_onnx`."
        )
    keras_out = np.asarray(keras_out, np.float32)
    file_out = np.asarray(file_out, np.float32)
    if keras_out.shape != file_out.shape:
        raise ValueError(
            f"The Keras model outputs shape {keras_out.shape} but the file "
            f"outputs {file_out.shape}; was the file converted from "
            "`keras_model`?"
        )
    # The file is judged by the Keras model's rule (see class_predictions).
    threshold = _threshold(keras_out)
    keras_pred = class_predictions(keras_out, threshold)
    file_pred = class_predictions(file_out, threshold)
    keras_accuracy = file_accuracy = None
    if labels is not None:
        keras_accuracy = float(np.mean(keras_pred == labels))
        file_accuracy = float(np.mean(file_pred == labels))
    raw, gzipped = interpreter.file_sizes(content)
    latency = None
    if latency_runs:
        sample = keras.tree.map_structure(lambda a: a[:1], x)
        latency = time_one(sample, latency_runs)
    diff = np.abs(keras_out - file_out)
    return VerificationReport(
        keras_accuracy=keras_accuracy,
        file_accuracy=file_accuracy,
        agreement=float(np.mean(keras_pred == file_pred)),
        max_abs_diff=float(np.max(diff)) if diff.size else 0.0,
        mean_abs_diff=float(np.mean(diff)) if diff.size else 0.0,
        bytes=raw,
        gzip_bytes=gzipped,
        latency_s=latency,
        num_samples=len(keras_pred),
        file_format=file_format,
        num_threads=num_threads,
        float_ops=None if file_format == _files.ONNX else float_ops(content),
        weights=(
            None
            if file_format == _files.ONNX
            else tuple(flatbuffer.weight_tensors(content))
        ),
    )


def _threshold(outputs):
    # One unit: a sigmoid probability (threshold 0.5) or a logit (0).
    return 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0


def class_predictions(outputs, threshold=None):
    """The predicted class of each sample from a classifier's outputs.

    Args:
        outputs: Class scores or logits, batch first.
        threshold: For a single output unit: the decision threshold;
            `None` uses 0.5 when the outputs are probabilities (all in
            [0, 1]) and 0 for logits.

    Returns:
        An int64 array, one class per sample (argmax for several units).
    """
    outputs = np.asarray(outputs, np.float32).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        if threshold is None:
            threshold = _threshold(outputs)
        return (outputs[:, 0] > threshold).astype(np.int64)
    return np.argmax(outputs, axis=1)
