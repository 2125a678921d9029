"""Conversion of a Keras 3 model to ONNX, and running ONNX files.

Why not `model.export(format="onnx")`: Keras 3's exporter ends in the same
`tf2onnx.convert.from_function` call, but it only writes to a path (we
return the bytes and write atomically), always makes the batch dynamic,
names outputs after TensorFlow's `Identity` ops, and monkey-patches tf2onnx
process-wide on first use. Tracing our own `tf.function` keeps the
conversion in memory and lets us check the result before writing it.
`tf2onnx.convert.from_keras` fails on Keras 3 models (KeyError
'keras_tensor_...'), so it is not an option.
"""

import contextlib
import logging
import statistics
import time
import warnings

import numpy as np

from keras_compress.convert import _errors
from keras_compress.convert import _files
from keras_compress.convert import _graph
from keras_compress.convert import _inputs
from keras_compress.convert import _native_logs
from keras_compress.convert import _precision
from keras_compress.convert import _tensorflow_worker

DEFAULT_OPSET = 17
# tf2onnx 1.16/1.17 converts TensorFlow graphs for ONNX opsets 9-18.
MIN_OPSET = 9
_INSTALL_HINT = "Install it with `pip install keras-compress[onnx]`."


def _tf2onnx():
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "Converting to ONNX needs the `tf2onnx` and `onnx` packages. "
            + _INSTALL_HINT
        ) from error
    return tf2onnx


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "Running an ONNX file needs the `onnxruntime` package. "
            + _INSTALL_HINT
        ) from error
    return onnxruntime


def _float16_converter():
    try:
        from onnxconverter_common import float16
    except ImportError as error:
        raise ImportError(
            "`float16=True` needs the `onnxconverter-common` package. "
            + _INSTALL_HINT
        ) from error
    return float16


def to_onnx(
    model,
    path=None,
    *,
    opset=None,
    dynamic_batch=True,
    float16=False,
    verbose=0,
):
    """Converts a Keras model to an ONNX model.

    The model's forward pass (`model(x, training=False)`) is traced as a
    `tf.function` with the model's input shapes and converted with
    `tf2onnx.convert.from_function`. This works for Sequential, Functional
    and subclassed models. Models quantized with Keras's
    `Model.quantize("int8")` keep their int8 kernels (`MatMulInteger`).

    The ONNX model's inputs keep the names of the Keras inputs; its outputs
    are named `output_0`, `output_1`, ... in the order of the model's
    outputs. ONNX Runtime runs it on CPU, and with its CUDA or TensorRT
    execution providers on GPUs.

    Args:
        model: A built `keras.Model` (Sequential, Functional, or a
            subclassed model that has been called on data). A model of the
            JAX or PyTorch backend is converted by a TensorFlow-backend
            worker process from a `.keras` file (its classes must be
            registered and importable).
        path: Optional file path; the model is written atomically there
            (its folder must exist). The bytes are returned in any case.
        opset: ONNX opset version, from 9 to the newest tf2onnx supports
            (18 for tf2onnx 1.17). `None` uses 17, which every current ONNX
            Runtime (>= 1.14) and TensorRT (>= 8.6) runs.
        dynamic_batch: If `True` the batch size is a free dimension named
            `"batch"`. If `False` it is fixed: the model's own batch size
            if its inputs declare one, else 1 (some accelerators want
            static shapes).
        float16: If `True`, weights and activations are float16 (half the
            bytes; for GPU execution) while the inputs and outputs stay
            float32, with casts inserted at the edges. Needs
            `onnxconverter-common`.
        verbose: `0` (or `1`) prints nothing; `2` lets tf2onnx and
            TensorFlow log, native lines included (captured otherwise, and
            attached to the exception when a conversion fails).

    Returns:
        The serialized ONNX model as `bytes`.

    Example:

    ```python
    blob = keras_compress.convert.to_onnx(model, "model.onnx")
    probabilities = keras_compress.convert.run_onnx(blob, x_test)
    ```
    """
    if path is not None:
        # Fail before any conversion work on a path that cannot be written.
        path = _files.check_output_path(path, "model.onnx")
    if _tensorflow_worker.needs_worker():
        return _tensorflow_worker.convert(
            "to_onnx",
            model,
            path,
            opset=opset,
            dynamic_batch=dynamic_batch,
            float16=float16,
        )

    tf2onnx = _tf2onnx()
    if float16:
        float16_module = _float16_converter()
    max_opset = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
    if opset is None:
        opset = min(DEFAULT_OPSET, max_opset)
    if not isinstance(opset, (int, np.integer)) or not (
        MIN_OPSET <= opset <= max_opset
    ):
        raise ValueError(
            f"`opset`={opset!r} is not supported: tf2onnx "
            f"{tf2onnx.__version__} converts to opsets {MIN_OPSET} to "
            f"{max_opset}. Use `opset=None` for {DEFAULT_OPSET}."
        )
    model = _precision.float32_compute_copy(model)
    specs = _graph.input_specs(model, batch=None if dynamic_batch else "fixed")
    # tf2onnx names the outputs after the keys of the returned dict.
    serve = _graph.serving_function(model, specs)

    with _quiet_tf2onnx(show=verbose == 2):
        try:
            proto, _ = tf2onnx.convert.from_function(
                serve, input_signature=specs, opset=int(opset)
            )
        except Exception as error:
            raise RuntimeError(
                f"ONNX conversion of model '{model.name}' failed in tf2onnx "
                f"(opset {opset}): {_first_line(error)}. Try another "
                f"`opset` (up to {max_opset}), or `to_tflite`."
            ) from error
    _check_ops(proto, model, opset, max_opset)
    # tf2onnx names the traced function here ("__inference_serve_61"), a
    # per-process counter: the same model would give different bytes.
    proto.graph.doc_string = f"Keras model '{model.name}', via keras_compress"
    if dynamic_batch:
        _name_batch_dimension(proto)
    if float16:
        proto = float16_module.convert_float_to_float16(
            proto, keep_io_types=True
        )
    content = proto.SerializeToString()
    if path is not None:
        _files.write_atomically(path, content)
    return content


@contextlib.contextmanager
def _quiet_tf2onnx(show=False):
    # tf2onnx logs every unsupported op and each optimizer pass; the errors
    # that matter are raised below with the layer named.
    if show:
        yield
        return
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), _native_logs.captured():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _check_ops(proto, model, opset, max_opset):
    """Raises if tf2onnx left TensorFlow ops it could not convert."""
    import onnx

    unknown = [
        node
        for node in proto.graph.node
        if node.domain in ("", "ai.onnx")
        and not onnx.defs.has(node.op_type, node.domain)
    ]
    if not unknown:
        return
    where = []
    for node in unknown:
        layer = _errors.layer_for_op(model, node.name)
        where.append(
            f"{node.op_type} (layer {layer})" if layer else node.op_type
        )
    hints = []
    if opset < max_opset:
        hints.append(f"try a newer `opset` (up to {max_opset})")
    hints.append("use `to_tflite(..., allow_select_tf_ops=True)` for LiteRT")
    hints.append("or replace the op in the model")
    raise RuntimeError(
        f"ONNX conversion failed: tf2onnx has no ONNX equivalent (opset "
        f"{opset}) for TensorFlow op(s) {', '.join(dict.fromkeys(where))}. "
        f"To fix: {'; '.join(hints)}."
    )


def _name_batch_dimension(proto):
    # tf2onnx calls free dimensions "unk__<n>"; call the batch "batch" in
    # every input and output so that runtimes see they are the same.
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _session(content, num_threads=None, providers=None):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    if providers is None:
        providers = ort.get_available_providers()
    return ort.InferenceSession(content, options, providers=list(providers))


_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _ordered_inputs(details, x, argument):
    """`x` in the session's input order; a dict is matched by name (tf2onnx
    may add a ":0" to the Keras model's input names)."""
    names = [d.name.split(":")[0] for d in details]
    return _inputs.in_file_order(x, names, argument)


def run_onnx(
    model_content, x, batch_size=256, num_threads=None, providers=None
):
    """Runs an ONNX file with ONNX Runtime on a batch of inputs.

    Args:
        model_content: The ONNX bytes or a path to a `.onnx` file.
        x: Inputs, batch first: a NumPy array, or for a model with
            several inputs a list of arrays (in the file's input order) or
            a dict of them by input name (as the Keras model takes them).
        batch_size: Samples per run. A file with a fixed batch size runs
            in chunks of that size instead (the last one padded).
        num_threads: ONNX Runtime intra-op threads (`None`: its default,
            one per core).
        providers: ONNX Runtime execution providers, e.g.
            `["CUDAExecutionProvider", "CPUExecutionProvider"]`; `None`
            uses every available one, best first.

    Returns:
        A float32 NumPy array with one row per sample, or a list of arrays
        for a file with several outputs.

    Example:

    ```python
    logits = run_onnx(to_onnx(model), x_test, num_threads=1)
    ```
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    content = _files.read_model_bytes(model_content)
    session = _session(content, num_threads, providers)
    details = session.get_inputs()
    inputs = _ordered_inputs(details, x, "x")
    if len(details) != len(inputs):
        raise ValueError(
            f"The file has {len(details)} input(s) but `x` gives {len(inputs)}."
        )
    num_samples = len(inputs[0])
    if any(len(a) != num_samples for a in inputs):
        raise ValueError(
            "All inputs in `x` must have the same number of samples; got "
            f"{[len(a) for a in inputs]}."
        )
    inputs = [
        a.astype(_NUMPY_TYPES.get(d.type, a.dtype), copy=False)
        for a, d in zip(inputs, details)
    ]
    fixed = details[0].shape[0] if details[0].shape else None
    if isinstance(fixed, int) and fixed > 0:
        batch_size = fixed
    chunks = []
    for start in range(0, num_samples, batch_size):
        batch = [a[start : start + batch_size] for a in inputs]
        count = len(batch[0])
        if isinstance(fixed, int) and count < fixed:
            batch = [_pad(b, fixed) for b in batch]
        feed = {d.name: b for d, b in zip(details, batch)}
        outputs = session.run(None, feed)
        chunks.append([np.asarray(o)[:count] for o in outputs])
    outputs = [
        np.concatenate(parts).astype(np.float32, copy=False)
        if np.issubdtype(parts[0].dtype, np.floating)
        else np.concatenate(parts)
        for parts in zip(*chunks)
    ]
    return outputs[0] if len(outputs) == 1 else outputs


def _pad(array, size):
    padding = np.zeros((size - len(array), *array.shape[1:]), array.dtype)
    return np.concatenate([array, padding])


def measure_onnx_latency(
    model_content,
    sample=None,
    num_runs=300,
    num_warmup=30,
    num_threads=1,
    providers=None,
):
    """Median wall time of one single-sample ONNX Runtime run.

    Args:
        model_content: The ONNX bytes or a path to a `.onnx` file.
        sample: One input batch of size 1 (a list or a dict by name for
            several inputs);
            `None` uses random values of the file's input shape.
        num_runs: Timed runs.
        num_warmup: Untimed runs first.
        num_threads: ONNX Runtime intra-op threads; 1 gives the steadiest
            numbers and compares with LiteRT's `num_threads=1`.
        providers: ONNX Runtime execution providers (`None`: all
            available).

    Returns:
        The median latency in seconds.

    Example:

    ```python
    print(f"{measure_onnx_latency(blob) * 1e6:.0f} us")
    ```
    """
    if num_runs < 1:
        raise ValueError(f"`num_runs` must be >= 1, got {num_runs}.")
    content = _files.read_model_bytes(model_content)
    session = _session(content, num_threads, providers)
    details = session.get_inputs()
    if sample is None:
        rng = np.random.default_rng(0)
        sample = [
            rng.random(
                tuple(
                    d if isinstance(d, int) and d > 0 else 1
                    for d in detail.shape
                )
            )
            for detail in details
        ]
    sample = _ordered_inputs(details, sample, "sample")
    feed = {
        d.name: np.asarray(s).astype(_NUMPY_TYPES.get(d.type, np.float32))
        for d, s in zip(details, sample)
    }
    for _ in range(num_warmup):
        session.run(None, feed)
    times = []
    for _ in range(num_runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
