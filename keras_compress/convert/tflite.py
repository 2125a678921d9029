"""Conversion of a Keras 3 model to a LiteRT (TFLite) flatbuffer."""

import collections
import re
import sys
import warnings

import keras
import numpy as np

from keras_compress import data_checks
from keras_compress import rewrite
from keras_compress.convert import _errors
from keras_compress.convert import _files
from keras_compress.convert import _graph
from keras_compress.convert import _keras_quantized
from keras_compress.convert import _native_logs
from keras_compress.convert import _precision
from keras_compress.convert import _recurrent
from keras_compress.convert import _tensorflow_worker
from keras_compress.convert import flatbuffer
from keras_compress.convert import layer_precision
from keras_compress.core import keras_private

MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
# Modes with integer activations, which need activation ranges.
_INTEGER_MODES = ("int8", "int16x8")
_INT16X8_OPS_SET = "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"
# The signature of the files, as `Model.export` names it.
SIGNATURE_KEY = "serving_default"

# Prunable kernels at least this sparse are stored in LiteRT's sparse format
# when `sparse=None`. Below about 50 % zeros the index arrays of the sparse
# encoding cost more bytes than the zeros they save.
AUTO_SPARSITY_THRESHOLD = 0.5
# Below the threshold but clearly pruned (trained weights are almost never
# exactly zero): a sparse file was likely expected, so say why there is
# none.
_NOTABLE_SPARSITY = 0.2


def to_tflite(
    model,
    mode="float32",
    *,
    representative_data=None,
    int8_io=False,
    integer_only=False,
    sparse=None,
    path=None,
    allow_select_tf_ops=False,
    num_calibration_samples=200,
    precision=None,
    algorithm="min_max",
    activation_range="min_max",
    verbose="auto",
):
    """Converts a Keras model to a LiteRT (TFLite) flatbuffer.

    The model's inference pass (`model(x, training=False)`) is traced as a
    `tf.function` (Sequential, Functional and called subclassed models)
    and converted with `tf.lite.TFLiteConverter.from_concrete_functions`,
    in memory; the file has the `"serving_default"` signature that
    `Model.export` files have, its inputs named after the model's. A model of
    the JAX or PyTorch backend is saved to a `.keras` file and converted
    the same way by a TensorFlow-backend worker process (its classes must
    be registered and importable, and `representative_data` NumPy arrays).

    Modes:

    - `"float32"`: float weights and activations; outputs equal Keras.
    - `"float16"`: float16 weights, dequantized to float32 at load time.
    - `"dynamic"`: int8 weights, float activations (dynamic range).
    - `"int8"`: full integer kernels with activation ranges calibrated on
      `representative_data`, or taken from the fake-quant ops of a
      quantization-aware-trained model. Input and output stay float32
      unless `int8_io=True`.
    - `"int16x8"`: int16 activations and int8 weights (LiteRT's
      `EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`),
      calibrated on `representative_data`: more accurate than `"int8"`
      where 256 activation levels are too few, at some speed cost. Input
      and output stay float32.

    A model quantized with Keras's own `Model.quantize("int8")` is
    converted from a float copy with its dequantized kernels. With
    `mode="dynamic"`, `"int8"` or `"int16x8"` the file then holds exactly
    the Keras model's int8 kernels; `"float32"`/`"float16"` store float
    kernels and warn.

    Per-layer precision: `precision={"conv2d": "w4a8", "dense": "w4"}` (or
    one spec string for every layer) converts a float32 file and quantizes
    it with Google's `ai-edge-quantizer` from that recipe, keyed by Keras
    layer name or path; layers it does not name get the mode's precision
    (`"int8"`: `"w8a8"`, `"dynamic"`: `"w8-dynamic"`, `"int16x8"`:
    `"w8a16"`, `"float32"`: float). Specs are listed in `LayerPrecision`:
    int4 or int8 weights with int8/int16 activations, weight-only int8/int4,
    dynamic int8/int4/int2, block-wise scales, float. Where LiteRT has no
    kernel for a precision (int4 depthwise convolutions, say) the layer
    keeps the mode's precision and a warning names it; `weight_tensors(file)`
    lists what every weight tensor holds, by layer.

    Args:
        model: A built `keras.Model` (Sequential, Functional or subclassed).
        mode: One of `"float32"`, `"float16"`, `"dynamic"`, `"int8"`,
            `"int16x8"`.
        representative_data: Calibration inputs, required for `"int16x8"`
            and for `"int8"` unless the model has fake-quant ranges. A
            quantization-aware model's `"int8"` file keeps the ranges it
            trained with: its `representative_data` is checked, not used. A
            NumPy array of samples (batch first), a tuple `(x,)` or
            `(x, y)`, a `tf.data.Dataset` (batched or not, elements `x` or
            `(x, y)`) or a callable returning an iterable of arrays. For a
            model with several inputs give lists/tuples of arrays, one per
            input. At most `num_calibration_samples` single samples are
            used, and they are held in memory.
        int8_io: Only for `mode="int8"`: if `True` the file takes int8
            input and returns int8 output (quantize with the input tensor's
            scale and zero point, see `run_tflite`).
        integer_only: Only for `mode="int8"`: the file is for an
            accelerator or a microcontroller without float kernels. It
            takes and returns int8 (as `int8_io=True`), and a conversion
            that leaves any op computing in float (a float island between
            DEQUANTIZE and QUANTIZE) raises a `ValueError` naming the ops,
            before anything is written.
        sparse: `True` stores zero-rich weights in LiteRT's sparse format
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), `False` never does,
            `None` does for float and dynamic-range files when the model's
            prunable kernels (trainable weights of rank >= 2) are at least
            50 % zeros. Integer files (`"int8"`, `"int16x8"`) stay dense
            under `None`: XNNPACK does not run sparse integer weights, so
            they would be slower, and LiteRT's sparse integer
            FULLY_CONNECTED is wrong for input depths below 16 (refused
            with `True`).
        path: Optional file path; the flatbuffer is written atomically
            there (its folder must exist). The bytes are returned in any
            case.
        allow_select_tf_ops: Let ops without a LiteRT builtin kernel run
            as TensorFlow ops (`SELECT_TF_OPS`). The file then needs the
            Flex delegate at run time, so this is off by default.
        num_calibration_samples: Most calibration samples to use.
        precision: `None`, a `LayerPrecision` spec string for every layer
            with weights (e.g. `"w4a8"`), or a dict `{layer name or path:
            spec}`; naming a nested model or a MultiHeadAttention layer
            applies to the layers inside it. Needs `pip install
            keras-compress[litert]`, a float model (not QAT or
            Keras-quantized) and `representative_data` when any layer has
            integer activations.
        algorithm: With `precision=`, how weights are rounded: `"min_max"`
            (to the nearest level of the full range), `"mse"` (the range
            with the least squared error) or `"gptq"` (GPTQ's
            error-compensating rounding of Dense and Conv2D kernels, done
            on a copy of the model from `representative_data`; other
            layers use `"min_max"`).
        activation_range: With `precision=` and integer activations, each
            activation's range: `"min_max"` (the calibrated range) or
            `"mse"` (the range whose int8 rounding of the calibration
            activations has the least squared error: outliers are clipped,
            the bulk rounded finer; the file's outputs keep their range).
        verbose: `0` prints nothing, `1` a calibration progress bar,
            `"auto"` the bar when standard output is a terminal, `2` the bar
            and the native log lines of the TensorFlow exporter and the
            LiteRT converter (captured otherwise, and attached to the
            exception when a conversion fails).

    Returns:
        The flatbuffer as `bytes`.

    Example:

    ```python
    blob = keras_compress.convert.to_tflite(model, "int8",
                                            representative_data=x_train)
    y = keras_compress.convert.run_tflite(blob, x_test)
    ```
    """
    if mode not in MODES:
        raise ValueError(
            f"Unknown `mode`={mode!r}. Expected one of {', '.join(MODES)}."
        )
    if int8_io and mode != "int8":
        raise ValueError(
            f"`int8_io=True` needs `mode='int8'`, got `mode`={mode!r}. "
            "Only full-integer files have integer input and output."
        )
    if integer_only:
        if mode != "int8":
            raise ValueError(
                f"`integer_only=True` needs `mode='int8'`, got `mode`="
                f"{mode!r}: only an int8 file can be integer end to end."
            )
        if precision is not None:
            raise ValueError(
                "`integer_only=True` does not combine with `precision=`: "
                "per-layer precisions may keep layers float. Convert with "
                "`mode='int8'` alone."
            )
        int8_io = True
    if sparse not in (None, True, False):
        raise ValueError(
            f"`sparse` must be None (auto), True or False; got {sparse!r}."
        )
    # Fail before any conversion work on a path that cannot be written.
    if path is not None:
        path = _files.check_output_path(path, "model.tflite")
    if precision is not None:
        precision = _check_precision_arguments(
            model, precision, mode, int8_io, sparse, algorithm
        )
    elif algorithm != "min_max":
        raise ValueError(
            f"`algorithm`={algorithm!r} applies to `precision=` conversions; "
            "pass `precision` (e.g. 'w4a8') too."
        )
    _check_activation_range(activation_range, precision, mode)
    if mode == "int16x8" and representative_data is None:
        raise ValueError(
            "`mode='int16x8'` needs calibration data: pass "
            "`representative_data` (e.g. a few hundred training inputs) so "
            "that the converter can measure activation ranges."
        )
    if num_calibration_samples < 1:
        raise ValueError(
            "`num_calibration_samples` must be >= 1, got "
            f"{num_calibration_samples}."
        )

    if _tensorflow_worker.needs_worker():
        return _tensorflow_worker.convert(
            "to_tflite",
            model,
            path,
            "representative_data",
            mode=mode,
            representative_data=representative_data,
            int8_io=int8_io,
            integer_only=integer_only,
            sparse=sparse,
            allow_select_tf_ops=allow_select_tf_ops,
            num_calibration_samples=num_calibration_samples,
            precision=precision,
            algorithm=algorithm,
            activation_range=activation_range,
            verbose=0,
        )
    if precision is not None:
        content = layer_precision.quantize(
            _precision.float32_compute_copy(model),
            precision,
            mode,
            float_converter=lambda m: to_tflite(
                m,
                "float32",
                sparse=False,
                allow_select_tf_ops=allow_select_tf_ops,
                verbose=verbose,
            ),
            representative_data=representative_data,
            num_calibration_samples=num_calibration_samples,
            algorithm=algorithm,
            verbose=verbose,
            activation_range=activation_range,
        )
        if path is not None:
            _files.write_atomically(path, content)
        return content
    import tensorflow as tf

    from keras_compress.quantization import observers

    quantization_aware = observers.is_quantization_aware(model)
    calibrate = mode in _INTEGER_MODES and representative_data is not None
    input_specs = _keras_input_specs(model)
    samples = None
    if calibrate and input_specs is not None:
        # Check the calibration data before the (slower) export.
        samples = _calibration_samples(
            representative_data, input_specs, num_calibration_samples
        )
    source = model
    if _keras_quantized.quantized_layers(model):
        model = _dequantized(model, mode)
    model = _precision.float32_compute_copy(model)
    if sparse is None:
        # Integer activations on sparse weights leave XNNPACK (it refuses
        # them) for slow reference kernels: keep integer files dense; gzip
        # still captures their zeros.
        sparsity = kernel_sparsity(model)
        sparse = (
            mode not in _INTEGER_MODES and sparsity >= AUTO_SPARSITY_THRESHOLD
        )
        if mode not in _INTEGER_MODES and (
            _NOTABLE_SPARSITY <= sparsity < AUTO_SPARSITY_THRESHOLD
        ):
            warnings.warn(
                f"The model's kernels are {sparsity:.0%} zeros, below the "
                f"{AUTO_SPARSITY_THRESHOLD:.0%} from which LiteRT's sparse "
                "format saves bytes, so the file stores them dense (gzip "
                "still captures the zeros). Prune further (did training stop "
                "before the pruning schedule's `end_step`?) or pass "
                "`sparse=True` to force the sparse format.",
                stacklevel=2,
            )
    elif sparse and mode in _INTEGER_MODES:
        _check_sparse_integer_layers(model)

    # Tracing and the converter log to file descriptor 2 natively.
    with _native_logs.captured(show=verbose == 2):
        _make_exportable(model)
        specs = _graph.input_specs(model)
        with _recurrent.unrolled(model) as rolled:
            function = _graph.serving_function(model, specs)
            concrete = function.get_concrete_function()
        if mode == "int8" and quantization_aware:
            # The file takes the ranges the model trained with from its
            # fake-quant ops. Calibrating too would replace some of them
            # (ConvNeXt: 98 % -> 64 % of the outputs within one step).
            calibrate = False
            samples = None
        if mode == "int8" and not calibrate:
            # A model with this library's QAT layers has fake-quant ops by
            # construction; only others need the (slower) graph search.
            if not quantization_aware:
                _check_fake_quant_ranges(concrete.graph)
            _warn_if_ranges_never_learned(source)
        if calibrate and samples is None:
            # Subclassed models have no `model.inputs`: the shapes their
            # first call recorded are in the traced signature.
            samples = _calibration_samples(
                representative_data,
                [(tuple(s.shape.as_list()), s.dtype.name) for s in specs],
                num_calibration_samples,
            )

        # The variables are frozen into the graph in memory; no SavedModel
        # is written and read back (see `_graph`).
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
        _configure(
            converter, mode, sparse, int8_io, allow_select_tf_ops, calibrate
        )
        if samples is not None:
            converter.representative_dataset = _with_progress(samples, verbose)
        try:
            with warnings.catch_warnings():
                # Said of every fake-quant model converted from a function:
                # the input's range is the input FakeQuant op's, in the
                # graph, which the converter goes on to use.
                warnings.filterwarnings(
                    "ignore", "Statistics for quantized inputs were expected"
                )
                content = converter.convert()
        except Exception as error:
            raise _conversion_error(
                error,
                mode,
                allow_select_tf_ops,
                source,
                concrete.graph,
                rolled,
            ) from error
    # A converted function has no signature; `Model.export` files have
    # this one, and LiteRT's signature runners need it.
    content = flatbuffer.add_signature(
        content,
        [spec.name for spec in specs],
        sorted(concrete.structured_outputs),
        SIGNATURE_KEY,
    )

    if mode == "dynamic":
        _warn_if_nothing_quantized(content)
    if integer_only:
        _check_integer_only(content, source)
    if path is not None:
        _files.write_atomically(path, content)
    return content


def _check_integer_only(content, model):
    """Raises unless every op of the int8 file computes on integers."""
    from keras_compress.convert.verify import float_ops as find_float_ops

    float_ops = find_float_ops(content)
    if not float_ops:
        return
    counts = collections.Counter(float_ops)
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
    raise ValueError(
        f"`integer_only=True`: the int8 file of '{model.name}' still "
        f"computes {len(float_ops)} op(s) in float ({listed}), which an "
        "integer-only accelerator cannot run. For a quantization-aware "
        "model, `quantize_model` warned which layers it left float: write "
        "their math as layers it quantizes, or give them a QuantizeConfig. "
        "Otherwise use `integer_only=False` (the float ops then run on the "
        "CPU)."
    )


def _check_precision_arguments(
    model, precision, mode, int8_io, sparse, algorithm
):
    """Checks the arguments of a `precision=` conversion; returns the
    normalized precision dict."""
    from keras_compress.quantization import observers

    precision = layer_precision.normalize(precision, mode)
    if algorithm not in layer_precision.ALGORITHMS:
        raise ValueError(
            f"Unknown `algorithm`={algorithm!r}. Expected one of "
            f"{', '.join(layer_precision.ALGORITHMS)}."
        )
    if int8_io:
        raise ValueError(
            "`int8_io=True` does not combine with `precision=`: the "
            "per-layer quantizer keeps float input and output."
        )
    if sparse:
        raise ValueError(
            "`sparse=True` does not combine with `precision=`: LiteRT's "
            "sparse format holds float and int8 weights only. Leave "
            "`sparse` unset; gzip still captures the zeros of a pruned model."
        )
    if observers.is_quantization_aware(model) or (
        _keras_quantized.quantized_layers(model)
    ):
        raise ValueError(
            "`precision=` quantizes a float model after training, but this "
            "model is already quantized (QAT layers or Keras's "
            "`Model.quantize`). Convert it with `mode='int8'`, or give the "
            "float model."
        )
    return precision


def _check_activation_range(activation_range, precision, mode):
    """Refuses an unknown `activation_range`, or `"mse"` where no layer has
    calibrated integer activations."""
    if activation_range not in layer_precision.ACTIVATION_RANGES:
        raise ValueError(
            f"Unknown `activation_range`={activation_range!r}. Expected one "
            f"of {', '.join(layer_precision.ACTIVATION_RANGES)}."
        )
    if activation_range == "min_max":
        return
    if precision is None:
        raise ValueError(
            f"`activation_range`={activation_range!r} applies to "
            "`precision=` conversions; pass `precision` (e.g. 'w4a8') too."
        )
    if not layer_precision.has_integer_activations(precision, mode):
        raise ValueError(
            f"`activation_range`={activation_range!r} chooses the ranges of "
            "integer activations, but no precision asked has them (e.g. "
            "'w8a8', 'w4a8'); weight-only and dynamic precisions keep "
            "float activations."
        )


def _make_exportable(model):
    """Calls a built but never-called model once on symbolic inputs.

    A subclassed model loaded from a `.keras` file is built from its build
    config but has never been called, and `Model.export` refuses it.
    """
    if keras_private.has_been_called(model):
        return
    input_shape = (model.get_build_config() or {}).get("input_shape")
    if input_shape is not None:
        rewrite.call_symbolically(model, input_shape)


# LiteRT 2.3's sparse integer FULLY_CONNECTED kernel returns wrong values
# when the input depth is below this (checked: depths 4, 8 and 12 fail,
# 16, 20, 24 and up match the dense file).
_MIN_SPARSE_INTEGER_FC_DEPTH = 16


def _check_sparse_integer_layers(model):
    """Refuses `sparse=True` where the integer sparse kernel is wrong."""
    for layer in keras_private.flatten_layers(model, include_self=False):
        kernel = getattr(layer, "kernel", None)
        if not isinstance(layer, keras.layers.Dense) or kernel is None:
            continue
        depth = int(kernel.shape[0])
        values = keras.ops.convert_to_numpy(kernel)
        if depth < _MIN_SPARSE_INTEGER_FC_DEPTH and not values.all():
            raise ValueError(
                f"`sparse=True` with an integer mode: Dense layer "
                f"'{layer.name}' has an input depth of {depth}, and LiteRT's "
                "sparse integer FULLY_CONNECTED kernel computes wrong "
                f"results below a depth of {_MIN_SPARSE_INTEGER_FC_DEPTH}. "
                "Use `sparse=False` (gzip still captures the zeros) or "
                "`sparse=None`."
            )


def kernel_sparsity(model):
    """Fraction of zeros over the model's prunable kernels.

    Prunable kernels are the trainable weights of rank >= 2 (Dense and
    convolution kernels, embeddings); biases and normalization parameters
    are left out because pruning does not touch them.

    Args:
        model: A built `keras.Model`.

    Returns:
        A float in [0, 1]; 0.0 if the model has no such weights.
    """
    zeros = 0
    total = 0
    for weight in model.trainable_weights:
        if len(weight.shape) < 2:
            continue
        values = np.asarray(weight.numpy())
        zeros += int(values.size - np.count_nonzero(values))
        total += int(values.size)
    return zeros / total if total else 0.0


def _configure(
    converter, mode, sparse, int8_io, allow_select_tf_ops, calibrate=True
):
    import tensorflow as tf

    optimizations = []
    if mode != "float32":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    # EXPERIMENTAL_SPARSITY alone keeps float32 numerics exact. Adding
    # DEFAULT to it would also quantize the weights to int8 (dynamic range),
    # so float32 mode never combines the two.
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations

    if mode == "int8" and calibrate:
        # Integer kernels only: an op without one fails loudly instead of
        # quietly staying float in a file the user believes is integer.
        # (The converter refuses this ops set without calibration data, so
        # a fake-quant model uses the builtin set and its own ranges.)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif mode == "int16x8":
        ops = [getattr(tf.lite.OpsSet, _INT16X8_OPS_SET)]
    else:
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if allow_select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.target_spec.supported_ops = ops

    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def _dequantized(model, mode):
    """A float copy of a model quantized with Keras's `quantize("int8")`."""
    _keras_quantized.check_supported(model)
    if mode in ("float32", "float16"):
        warnings.warn(
            f"Model '{model.name}' was quantized with Keras's "
            f"`quantize('int8')`, but `mode={mode!r}` stores its kernels "
            "dequantized to float. Use `mode='dynamic'` to keep Keras's "
            "int8 kernels in the file.",
            stacklevel=3,
        )
    return _keras_quantized.dequantized_copy(model)


def _check_fake_quant_ranges(graph):
    """Raises unless the traced `graph` has fake-quant ops with ranges.

    A quantization-aware-trained model carries its activation ranges in
    `FakeQuantWithMinMax*` ops, so the converter needs no calibration data
    for it. Any other model would come back with float activations.
    """
    graph_def = graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    if not any(node.op.startswith("FakeQuantWithMinMax") for node in nodes):
        raise ValueError(
            "`mode='int8'` needs activation ranges and this model has no "
            "fake-quant ops to take them from: pass `representative_data` "
            "(e.g. a few hundred training inputs) for calibration, or "
            "train the model with quantization-aware training first."
        )


def _warn_if_ranges_never_learned(model):
    """Warns when a QAT model's activation observers never saw a batch.

    Their range is still the initial [0, 0], so the converted file would
    clip those activations to about zero: almost always a model converted
    before it was trained.
    """
    from keras_compress.quantization import observers

    never = observers.unobserved_quantizers(model)
    if never:
        shown = ", ".join(never[:3]) + (", ..." if len(never) > 3 else "")
        warnings.warn(
            f"{len(never)} activation range(s) of this quantization-aware "
            f"model were never learned ({shown}); the file will clip those "
            "activations to about zero. Train the model (at least a few "
            "steps) before converting it.",
            stacklevel=3,
        )


def _with_progress(samples, verbose):
    """The converter's `representative_dataset`, with a progress bar."""
    import keras

    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 0

    def dataset():
        if verbose:
            print("Calibrating activation ranges")
        progress = keras.utils.Progbar(len(samples), unit_name="sample")
        for i, sample in enumerate(samples, start=1):
            yield sample
            if verbose:
                progress.update(i)

    return dataset


def _keras_input_specs(model):
    """[(shape, dtype)] of the model's inputs, or None if not known yet."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return [(tuple(t.shape), str(t.dtype)) for t in inputs]


def _calibration_samples(data, input_specs, limit):
    """Normalizes calibration data to a list of `[x[i:i+1], ...]` batches."""
    num_inputs = len(input_specs)
    samples = []
    for element in _iterate(data):
        arrays = _split_inputs(element, num_inputs)
        _check_dtypes(arrays, input_specs)
        # One inf kills the converter's process; NaN gives NaN ranges.
        data_checks.check_inputs(arrays, "representative_data")
        batched = _is_batched(arrays[0], input_specs)
        count = len(arrays[0]) if batched else 1
        for i in range(count):
            sample = [
                a[i : i + 1] if batched else a[np.newaxis] for a in arrays
            ]
            samples.append(_cast(sample, input_specs))
            if len(samples) >= limit:
                break
        if len(samples) >= limit:
            break
    if not samples:
        raise ValueError(
            "`representative_data` yielded no samples; give at least one "
            "calibration input."
        )
    _check_sample_shapes(samples[0], input_specs)
    data_checks.warn_if_uninformative(samples, "representative_data")
    return samples


def _iterate(data):
    """Yields the elements of any supported kind of calibration data."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        yield from data.as_numpy_iterator()
    elif isinstance(data, (np.ndarray, tuple, list, dict)) or hasattr(
        data, "__array__"
    ):
        # One element that holds all samples along the batch axis.
        yield data
    elif callable(data):
        yield from data()
    else:
        raise ValueError(
            "`representative_data` must be a NumPy array, a tuple `(x,)` or "
            "`(x, y)`, a tf.data.Dataset or a callable returning an "
            f"iterable of arrays; got {type(data).__name__}."
        )


def _split_inputs(element, num_inputs):
    """The model inputs of one element, as a list of NumPy arrays."""
    if isinstance(element, dict):
        arrays = list(element.values())
    elif isinstance(element, (tuple, list)):
        arrays = list(element)
        # `(x, y)` or `(x,)` for a single-input model: keep only x.
        keep = num_inputs
        if len(arrays) > 1 and isinstance(arrays[0], (tuple, list)):
            arrays = list(arrays[0])
        else:
            arrays = arrays[:keep]
    else:
        arrays = [element]
    return [np.asarray(a) for a in arrays]


def _is_batched(array, input_specs):
    # Model shapes include the batch axis; an unbatched sample lacks it.
    return array.ndim == len(input_specs[0][0])


def _cast(sample, input_specs):
    return [
        a.astype(np.float32 if "float" in dtype else dtype)
        for a, (_, dtype) in zip(sample, input_specs)
    ]


def _check_dtypes(arrays, input_specs):
    for i, (array, (shape, dtype)) in enumerate(zip(arrays, input_specs)):
        integer_input = "int" in dtype or dtype == "bool"
        # Numbers only; floats for an integer input (token ids, say) only
        # when they hold whole numbers, so that the cast loses nothing.
        fits = array.dtype.kind in "biu" or (
            array.dtype.kind == "f"
            and (not integer_input or np.all(np.mod(array, 1) == 0))
        )
        if not fits:
            where = f" for input {i}" if len(input_specs) > 1 else ""
            raise ValueError(
                f"`representative_data` has dtype {array.dtype} and "
                f"shape {array.shape}{where}, but the model expects "
                f"{dtype} inputs of shape {tuple(shape)} (None = any "
                "size). Pass numeric arrays shaped like the model's inputs."
            )


def _check_sample_shapes(sample, input_specs):
    if len(sample) != len(input_specs):
        raise ValueError(
            f"`representative_data` gives {len(sample)} input(s) per sample "
            f"but the model has {len(input_specs)}."
        )
    for i, (array, (shape, _)) in enumerate(zip(sample, input_specs)):
        expected = shape[1:]
        given = array.shape[1:]
        fits = len(given) == len(expected) and all(
            e is None or e == g for e, g in zip(expected, given)
        )
        if not fits:
            where = f" for input {i}" if len(input_specs) > 1 else ""
            raise ValueError(
                f"`representative_data` has per-sample shape {given}{where} "
                f"but the model expects {tuple(expected)} "
                "(None = any size). Pass inputs shaped like the model's."
            )


_OP_PATTERN = re.compile(r"'((?:tf|tfl)\.\w+)' op")
_CUSTOM_OPS_PATTERN = re.compile(r"(?:Custom|Flex) ops: ([\w, ]+)")


def _conversion_error(
    error, mode, allow_select_tf_ops, model=None, graph=None, rolled_layers=()
):
    message = str(error)
    ops = list(dict.fromkeys(_OP_PATTERN.findall(message)))
    for match in _CUSTOM_OPS_PATTERN.findall(message):
        for name in match.split(","):
            name = name.strip()
            if name and not any(op.endswith("." + name) for op in ops):
                ops.append(name)
    if model is not None and graph is not None:
        # Name the layer of each failing op: the traced graph has the op,
        # named after the Keras layer scopes it was created in.
        ops = [_with_layer(op, model, graph) for op in ops]
    named = f" at op(s) {', '.join(ops)}" if ops else ""
    hints = []
    if rolled_layers and "TensorList" in message:
        names = ", ".join(repr(layer.name) for layer in rolled_layers)
        hints.append(
            f"give the recurrent layer(s) {names} a fixed sequence length "
            "(e.g. `keras.Input((steps, features))`): their loop converts "
            "only unrolled, and an unknown length cannot be unrolled"
        )
    if not allow_select_tf_ops:
        hints.append(
            "pass `allow_select_tf_ops=True` to run unsupported ops as "
            "TensorFlow ops (needs the Flex delegate at run time)"
        )
    if mode in _INTEGER_MODES:
        hints.append("try `mode='dynamic'` if an op has no integer kernel")
    if mode != "float32":
        hints.append("try `mode='float32'`")
    hints.append("or replace the op in the model")
    # The converter's own message is long; keep its first lines for context.
    first_lines = "\n".join(message.strip().splitlines()[:6])
    return RuntimeError(
        f"LiteRT conversion failed in mode={mode!r}{named}. To fix: "
        f"{'; '.join(hints)}.\nConverter said:\n{first_lines}"
    )


def _with_layer(op, model, graph):
    """`op` ("tf.BesselI1e"), with the layer that made it where known."""
    op_type = op.split(".")[-1]
    for node in graph.as_graph_def().node:
        if node.op == op_type:
            layer = _errors.layer_for_op(model, node.name)
            if layer:
                return f"{op} (layer {layer})"
    return op


def _warn_if_nothing_quantized(content):
    """Warns when dynamic-range conversion left every weight in float32.

    The converter quantizes only weights with at least 1024 values, so a
    small model can come back as a plain float32 file.
    """
    try:
        from keras_compress.convert.interpreter import op_details

        ops = op_details(content)
    except (ImportError, RuntimeError):
        return  # No LiteRT interpreter to inspect the file with.
    if not any("int8" in op.input_dtypes for op in ops):
        warnings.warn(
            "`mode='dynamic'` left every weight in float32: the converter "
            "only quantizes weights with at least 1024 values and this "
            "model has none. The file is a float32 file.",
            stacklevel=3,
        )
