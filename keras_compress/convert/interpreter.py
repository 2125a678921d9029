"""Running and inspecting a LiteRT (TFLite) file with the LiteRT interpreter."""

import dataclasses
import gzip
import statistics
import time
import warnings

import numpy as np

from keras_compress.convert import _files
from keras_compress.convert import _inputs
from keras_compress.convert import _native_logs


def _litert():
    try:
        from ai_edge_litert import interpreter
    except ImportError as error:
        raise ImportError(
            "Running a LiteRT file needs the `ai-edge-litert` package. "
            "Install it with `pip install keras-compress[litert]`."
        ) from error
    return interpreter


def _make_interpreter(content, num_threads=None, delegates=True):
    litert = _litert()
    kwargs = {"model_content": content, "num_threads": num_threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = (
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    return litert.Interpreter(**kwargs)


def _preserving_interpreter(content):
    """An interpreter that keeps every tensor after `invoke()` (not yet
    allocated), for reading intermediate values."""
    with _native_logs.captured(), warnings.catch_warnings():
        # It warns that keeping every tensor is for debugging: reading
        # them is what this interpreter is for.
        warnings.simplefilter("ignore", UserWarning)
        return _litert().Interpreter(
            model_content=content, experimental_preserve_all_tensors=True
        )


def _allocated_interpreter(content, num_threads=None, shapes=None):
    """An interpreter with tensors allocated, inputs resized to `shapes`.

    The default XNNPACK delegate refuses some valid files (seen: int8
    weights in sparse format, in "dynamic" and "int8" modes), so on failure
    this retries with the builtin kernels only.
    """
    # LiteRT logs the delegate it creates ("INFO: Created TensorFlow Lite
    # XNNPACK delegate") on file descriptor 2: keep it off the terminal.
    with _native_logs.captured():
        return _first_allocated(content, num_threads, shapes)


def _first_allocated(content, num_threads, shapes):
    last_error = None
    for delegates in (True, False):
        interpreter = _make_interpreter(content, num_threads, delegates)
        try:
            if shapes is not None:
                for detail, shape in zip(
                    interpreter.get_input_details(), shapes
                ):
                    interpreter.resize_tensor_input(detail["index"], shape)
            interpreter.allocate_tensors()
            # XNNPACK reports some refusals only at the first invoke. Run
            # it on zeros: uninitialized memory is out of range for GATHER
            # (an Embedding's token ids).
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(
                    detail["index"],
                    np.zeros(detail["shape"], detail["dtype"]),
                )
            interpreter.invoke()
            return interpreter
        except (RuntimeError, ValueError) as error:
            last_error = error
    raise last_error


def _quantize(x, detail):
    """`x` in the dtype of an input tensor, quantized if it is integer."""
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype)


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * np.float32(scale)
    return y


def run_tflite(model_content, x, batch_size=256, num_threads=None):
    """Runs a LiteRT file on a batch of inputs.

    Integer inputs and outputs (files converted with `int8_io=True`) are
    handled for you: `x` is quantized with the input tensor's scale and
    zero point and the outputs are dequantized back to float32.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.
        x: Inputs, batch first: a NumPy array, or for a model with
            several inputs a list of arrays (in the file's input order) or
            a dict of them by input name (as the Keras model takes them).
        batch_size: Samples per `invoke()`. The input tensor is resized to
            this batch; if the file does not allow resizing, samples are
            run one at a time.
        num_threads: Interpreter threads (`None`: the LiteRT default).

    Returns:
        A float NumPy array with one row per sample, or a list of arrays
        for a file with several outputs.

    Example:

    ```python
    probabilities = run_tflite(blob, x_test)
    ```
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    content = _files.read_model_bytes(model_content)
    probe = _make_interpreter(content, num_threads)
    inputs = _ordered_inputs(probe, x, "x")
    num_samples = len(inputs[0])
    if any(len(a) != num_samples for a in inputs):
        raise ValueError(
            "All inputs in `x` must have the same number of samples; got "
            f"{[len(a) for a in inputs]}."
        )
    if len(probe.get_input_details()) != len(inputs):
        raise ValueError(
            f"The file has {len(probe.get_input_details())} input(s) but "
            f"`x` gives {len(inputs)}."
        )
    try:
        outputs = _run_batched(content, inputs, batch_size, num_threads)
    except (RuntimeError, ValueError):
        # Some files have a fixed batch size; run them sample by sample.
        outputs = _run_batched(content, inputs, 1, num_threads)
    return outputs[0] if len(outputs) == 1 else outputs


def _ordered_inputs(interpreter, x, argument):
    """`x` in the file's input order; a dict is matched by the names of the
    file's signature (the Keras model's input names)."""
    names = None
    if isinstance(x, dict):
        runner = interpreter.get_signature_runner()
        by_index = {
            detail["index"]: name
            for name, detail in runner.get_input_details().items()
        }
        names = [by_index[d["index"]] for d in interpreter.get_input_details()]
    return _inputs.in_file_order(x, names, argument)


def _run_batched(content, inputs, batch_size, num_threads):
    num_samples = len(inputs[0])
    interpreter = None
    current = None
    chunks = []
    for start in range(0, num_samples, batch_size):
        batch = [a[start : start + batch_size] for a in inputs]
        shapes = [b.shape for b in batch]
        if shapes != current:
            interpreter = _allocated_interpreter(content, num_threads, shapes)
            current = shapes
        for detail, b in zip(interpreter.get_input_details(), batch):
            interpreter.set_tensor(detail["index"], _quantize(b, detail))
        interpreter.invoke()
        chunks.append(
            [
                _dequantize(interpreter.get_tensor(d["index"]), d)
                for d in interpreter.get_output_details()
            ]
        )
    return [np.concatenate(parts) for parts in zip(*chunks)]


def measure_latency(
    model_content, sample=None, num_runs=300, num_warmup=30, num_threads=1
):
    """Median wall time of one single-sample `invoke()`.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.
        sample: One input batch of size 1 (a list or a dict by name for
            several inputs);
            `None` uses random values of the file's input shape.
        num_runs: Timed invocations.
        num_warmup: Untimed invocations first (caches, thread pools).
        num_threads: Interpreter threads; 1 gives the steadiest numbers.

    Returns:
        The median latency in seconds.

    Example:

    ```python
    print(f"{measure_latency(blob) * 1e3:.2f} ms")
    ```
    """
    if num_runs < 1:
        raise ValueError(f"`num_runs` must be >= 1, got {num_runs}.")
    content = _files.read_model_bytes(model_content)
    shapes = None
    if sample is not None:
        sample = _ordered_inputs(
            _make_interpreter(content, num_threads), sample, "sample"
        )
        shapes = [s.shape for s in sample]
    interpreter = _allocated_interpreter(content, num_threads, shapes)
    details = interpreter.get_input_details()
    if sample is None:
        rng = np.random.default_rng(0)
        sample = [
            rng.random(tuple(max(int(n), 1) for n in d["shape"]))
            for d in details
        ]
        # Random values in [0, 1) are fine for float inputs; integer
        # inputs get the quantized value of the same range.
    for detail, s in zip(details, sample):
        interpreter.set_tensor(detail["index"], _quantize(s, detail))
    return _median_invoke_seconds(interpreter, num_runs, num_warmup)


def _median_invoke_seconds(interpreter, num_runs, num_warmup):
    """Median wall time of `interpreter.invoke()` on its current inputs."""
    for _ in range(num_warmup):
        interpreter.invoke()
    times = []
    for _ in range(num_runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def file_sizes(model_content):
    """Size of a file as stored and after gzip level 9.

    The gzip size is what a pruned model's zeros save in an app download
    even without LiteRT's sparse format.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.

    Returns:
        A tuple `(raw_bytes, gzip_bytes)`.
    """
    content = _files.read_model_bytes(model_content)
    return len(content), len(gzip.compress(content, compresslevel=9))


@dataclasses.dataclass(frozen=True)
class OpDetail:
    """One operator of a LiteRT file.

    Attributes:
        index: Position in the execution plan.
        op_name: Builtin name, e.g. `"CONV_2D"` or `"FULLY_CONNECTED"`.
        input_dtypes: NumPy dtype names of the op's inputs (`None` for an
            omitted optional input), e.g. `("int8", "int8", "int32")` for an
            integer convolution (input, kernel, bias).
        output_dtypes: NumPy dtype names of the op's outputs.
    """

    index: int
    op_name: str
    input_dtypes: tuple
    output_dtypes: tuple


def op_details(model_content):
    """Lists the operators of a LiteRT file with their tensor dtypes.

    Useful to check what the converter produced, for instance that an
    int8 file runs integer `CONV_2D` kernels.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.

    Returns:
        A list of `OpDetail`, in execution order.

    Example:

    ```python
    ops = op_details(blob)
    assert any(op.op_name == "CONV_2D" and op.input_dtypes[1] == "int8"
               for op in ops)
    ```
    """
    # Without delegates so that the original builtin ops are listed.
    interpreter = _make_interpreter(
        _files.read_model_bytes(model_content), delegates=False
    )
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is None:
        raise RuntimeError(
            "This version of ai-edge-litert does not expose operator "
            "details (`Interpreter._get_ops_details`); upgrade it with "
            "`pip install -U ai-edge-litert`."
        )
    dtypes = {
        t["index"]: np.dtype(t["dtype"]).name
        for t in interpreter.get_tensor_details()
    }

    def names(indices):
        return tuple(dtypes.get(int(i)) if i >= 0 else None for i in indices)

    return [
        OpDetail(
            index=int(op["index"]),
            op_name=op["op_name"],
            input_dtypes=names(op["inputs"]),
            output_dtypes=names(op["outputs"]),
        )
        for op in get_ops()
    ]
