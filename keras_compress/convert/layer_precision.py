"""Per-layer precision in a LiteRT file: int4, int8, int16 activations, float.

`to_tflite(model, mode, precision={...})` converts the model to a float32
file and quantizes it with Google's `ai-edge-quantizer` (the LiteRT
project's own post-training quantizer, which writes packed int4 tensors and
block-wise scales) from a recipe keyed by Keras layer, not by `.tflite`
tensor names:

- Each layer that owns a kernel is given a unique name for the duration of
  the export, so every operator it becomes carries that name in the file.
  This maps operators to layers exactly, for nested models, subclassed
  models, shared layers and fused ops alike (TensorFlow's own name scopes
  are renumbered on export: `"dense"` and `"dense_1"` become ambiguous).
  The model's names are restored before the call returns and the file's
  tensors get the real names back.
- The quantizer silently keeps an operator at the mode's precision (or in
  float) when it has no policy for the precision asked, e.g. int4
  depthwise convolutions (which LiteRT itself runs: the converter writes
  them for a 4-bit QAT model). The file is read back, every layer whose
  weights do not hold the precision asked for is named in a warning, and
  the file records which layer each operator came from
  (`keras_compress.convert.weight_tensors` lists it).
"""

import contextlib
import dataclasses
import io
import re
import sys
import warnings

import numpy as np

from keras_compress import rewrite
from keras_compress.convert import _native_logs
from keras_compress.convert import flatbuffer

_ALIASES = {
    "float32": "float",
    "int8": "w8a8",
    "int4": "w4a8",
    "int16x8": "w8a16",
    "dynamic": "w8-dynamic",
}
_SPEC = re.compile(
    r"^w(?P<weights>[248])"
    r"(?:a(?P<activations>8|16)|(?P<dynamic>-dynamic))?"
    r"(?:/b(?P<block>32|64|128|256))?$"
)
# The precision of layers the map does not name, per `to_tflite` mode.
MODE_DEFAULTS = {
    "float32": "float",
    "dynamic": "w8-dynamic",
    "int8": "w8a8",
    "int16x8": "w8a16",
}
ALGORITHMS = {
    "min_max": "min_max_uniform_quantize",
    "mse": "MSE",
    # Rounded in Keras (keras_compress.quantization.gptq) onto the grid
    # that min-max rounding then reproduces exactly.
    "gptq": "min_max_uniform_quantize",
}
# Samples per calibration batch (see `_calibration_batches`).
_CALIBRATION_BATCH = 256
# Layers are renamed `kcq<i>q` during the export; TensorFlow may append
# "_<n>" to the scope.
_TAG = re.compile(r"kcq(\d+)q(?:_\d+)?")


@dataclasses.dataclass(frozen=True)
class LayerPrecision:
    """The precision of one layer's weights and activations in a file.

    Written as a short spec string:

    - `"float"` (or `"float32"`): not quantized.
    - `"w8a8"` (`"int8"`), `"w4a8"` (`"int4"`), `"w8a16"` (`"int16x8"`),
      `"w4a16"`: integer kernels, 8- or 4-bit weights (one scale per output
      channel) and 8- or 16-bit activations calibrated on data.
    - `"w8"`, `"w4"`: weight-only; weights stored in 8 or 4 bits and
      dequantized to float before a float kernel (smallest accuracy loss,
      no speed-up).
    - `"w8-dynamic"` (`"dynamic"`), `"w4-dynamic"`, `"w2-dynamic"`: dynamic
      range; float activations quantized on the fly by the kernel.
    - A `"/b32"`, `"/b64"`, `"/b128"` or `"/b256"` suffix asks for one scale
      per block of that many values instead of per channel (LiteRT has
      block-wise kernels for dynamic 4- and 2-bit fully connected layers
      and embedding lookups).

    Args:
        weight_bits: 2, 4 or 8; `None` for float.
        activation_bits: 8 or 16 for integer kernels; `None` for
            weight-only or dynamic-range layers.
        dynamic: Dynamic-range kernel (float activations quantized on the
            fly).
        block_size: Values per scale for block-wise weights, or `None` for
            one scale per output channel.

    Example:

    ```python
    LayerPrecision.from_spec("w4a8")
    # LayerPrecision(weight_bits=4, activation_bits=8, ...)
    ```
    """

    weight_bits: int | None = None
    activation_bits: int | None = None
    dynamic: bool = False
    block_size: int | None = None

    @classmethod
    def from_spec(cls, spec):
        """Parses a spec string (see the class docstring), or passes a
        `LayerPrecision` through."""
        if isinstance(spec, LayerPrecision):
            return spec
        if not isinstance(spec, str):
            raise TypeError(
                f"A layer precision must be a string such as 'w4a8', got "
                f"{type(spec).__name__}: {spec!r}."
            )
        text = _ALIASES.get(spec.strip().lower(), spec.strip().lower())
        if text == "float":
            return cls()
        match = _SPEC.match(text)
        if match is None:
            raise ValueError(
                f"Unknown layer precision {spec!r}. Expected 'float', 'w8a8' "
                "(or 'int8'), 'w4a8' (or 'int4'), 'w8a16' (or 'int16x8'), "
                "'w4a16', weight-only 'w8'/'w4', dynamic-range "
                "'w8-dynamic'/'w4-dynamic'/'w2-dynamic', optionally with a "
                "block size such as 'w4-dynamic/b32'."
            )
        weights = int(match["weights"])
        activations = match["activations"]
        dynamic = match["dynamic"] is not None
        block = match["block"]
        if weights == 2 and not dynamic:
            raise ValueError(
                f"Layer precision {spec!r}: 2-bit weights exist in LiteRT "
                "only as dynamic range; use 'w2-dynamic'."
            )
        if block and (activations or not dynamic or weights == 8):
            raise ValueError(
                f"Layer precision {spec!r}: block-wise scales exist in "
                "LiteRT only for dynamic-range 4- and 2-bit weights; use "
                f"'w{min(weights, 4)}-dynamic/b{block}'."
            )
        return cls(
            weight_bits=weights,
            activation_bits=int(activations) if activations else None,
            dynamic=dynamic,
            block_size=int(block) if block else None,
        )

    @property
    def is_float(self):
        return self.weight_bits is None

    @property
    def needs_calibration(self):
        """Integer activations need ranges measured on data."""
        return self.activation_bits is not None

    def __str__(self):
        if self.is_float:
            return "float"
        text = f"w{self.weight_bits}"
        if self.activation_bits:
            text += f"a{self.activation_bits}"
        elif self.dynamic:
            text += "-dynamic"
        if self.block_size:
            text += f"/b{self.block_size}"
        return text

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def fallback(self):
        """The 8-bit precision of the same kind, kept where the quantizer
        does not write this one (e.g. int4 depthwise convolutions); `None`
        for float and 8-bit precisions."""
        if self.is_float or (self.weight_bits == 8 and not self.block_size):
            return None
        return dataclasses.replace(self, weight_bits=8, block_size=None)

    def holds(self, tensor):
        """Whether a `flatbuffer.WeightTensor` is stored as asked."""
        if self.is_float:
            return tensor.granularity is None
        if tensor.dtype != f"int{self.weight_bits}":
            return False
        if self.block_size and tensor.granularity != f"block{self.block_size}":
            return False
        expected = (
            "integer"
            if self.activation_bits
            else "dynamic"
            if self.dynamic
            else "float"
        )
        return tensor.compute == expected

    def recipe_entry(self, regex, algorithm="min_max"):
        """One `ai-edge-quantizer` recipe entry applying this precision."""
        if self.is_float:
            return {
                "regex": regex,
                "operation": "*",
                "algorithm_key": "no_quantize",
                "op_config": {},
            }
        weights = {
            "num_bits": self.weight_bits,
            "symmetric": True,  # LiteRT's kernels take symmetric weights.
            "granularity": (
                f"BLOCKWISE_{self.block_size}"
                if self.block_size
                else "CHANNELWISE"
            ),
            "dtype": "INT",
        }
        config = {"weight_tensor_config": weights}
        if self.activation_bits:
            config["activation_tensor_config"] = {
                "num_bits": self.activation_bits,
                # int16 activations are symmetric in LiteRT, int8 not.
                "symmetric": self.activation_bits == 16,
                "granularity": "TENSORWISE",
                "dtype": "INT",
            }
        weight_only = not self.activation_bits and not self.dynamic
        config["compute_precision"] = "FLOAT" if weight_only else "INTEGER"
        config["explicit_dequantize"] = weight_only
        return {
            "regex": regex,
            "operation": "*",
            "algorithm_key": ALGORITHMS[algorithm],
            "op_config": config,
        }


def normalize(precision, mode):
    """Checks a `precision` argument; returns `{key: spec string}`.

    Args:
        precision: A spec string (every quantizable layer) or a dict
            `{layer name or path: spec}`.
        mode: The `to_tflite` mode, which sets the precision of layers the
            dict does not name.

    Returns:
        A dict of canonical spec strings; the key `"*"` stands for every
        layer.
    """
    if mode not in MODE_DEFAULTS:
        raise ValueError(
            f"`precision=` works with `mode` in {sorted(MODE_DEFAULTS)}, got "
            f"`mode`={mode!r}. For a float16 file with some layers "
            "quantized, quantize those layers in a float32 file instead."
        )
    if isinstance(precision, (str, LayerPrecision)):
        precision = {"*": precision}
    if not isinstance(precision, dict) or not precision:
        raise TypeError(
            "`precision` must be a spec string such as 'w4a8' or a non-empty "
            "dict {layer name: spec}, got "
            f"{type(precision).__name__}: {precision!r}."
        )
    result = {}
    for key, spec in precision.items():
        if not isinstance(key, str):
            raise TypeError(
                f"`precision` keys must be layer names (strings), got {key!r}."
            )
        try:
            result[key] = str(LayerPrecision.from_spec(spec))
        except (TypeError, ValueError) as error:
            raise type(error)(f"`precision[{key!r}]`: {error}") from None
    return result


def quantizable_layers(model):
    """`[(path, layer)]` of the leaf layers that own a kernel (a weight of
    two or more dimensions): the layers a precision can apply to."""
    return [
        (path, layer)
        for path, layer in rewrite.iter_layers(model)
        if any(len(weight.shape) >= 2 for weight in layer.weights)
    ]


def resolve(model, precision):
    """`{leaf path: LayerPrecision}` for a normalized `precision` dict.

    A key may name a leaf layer (by name or path) or a container (a nested
    model, a MultiHeadAttention layer): a container's precision applies to
    the leaves inside it, and a leaf's own entry wins over its container's.
    A bare name applies to every layer of that name (layers of two nested
    models may share one); a path picks one.
    """
    leaves = quantizable_layers(model)
    paths = [path for path, _ in leaves]
    containers = {
        path: layer
        for path, layer in rewrite.iter_layers(model, include_models=True)
        if path not in paths
    }
    result = {}
    # Shorter (outer) keys first, so that inner entries override them.
    for key in sorted(precision, key=lambda k: (k != "*", k.count("/"))):
        spec = LayerPrecision.from_spec(precision[key])
        if key == "*":
            chosen = paths
        else:
            chosen = [p for p in paths if _names(key, p)]
            if not chosen:
                prefixes = [p + "/" for p in containers if _names(key, p)]
                chosen = [p for p in paths if p.startswith(tuple(prefixes))]
            if not chosen:
                listed = ", ".join(repr(p) for p in paths) or "none"
                raise ValueError(
                    f"`precision` names layer {key!r}, which is not a layer "
                    f"with weights in '{model.name}'. Layers a precision "
                    f"can apply to: {listed}."
                )
        for path in chosen:
            result[path] = spec
    layers = dict(leaves)
    for path, spec in result.items():
        _check_block_size(path, layers[path], spec)
    return result


def _check_block_size(path, layer, spec):
    """Block-wise scales need blocks that tile the quantized dimension."""
    if not spec.block_size:
        return
    import keras

    kernel = next(w for w in layer.weights if len(w.shape) >= 2)
    # LiteRT blocks run along a Dense kernel's input axis and along an
    # embedding's vector.
    embedding = isinstance(layer, keras.layers.Embedding)
    size = kernel.shape[-1] if embedding else kernel.shape[0]
    if size % spec.block_size:
        raise ValueError(
            f"`precision` gives layer '{path}' blocks of {spec.block_size} "
            f"values, but its {'vectors' if embedding else 'inputs'} have "
            f"{size}, not a multiple of {spec.block_size}. Use a block size "
            f"that divides {size}, or '{spec.fallback() or 'w8-dynamic'}' "
            "(one scale per channel) for this layer."
        )


def _names(key, path):
    """Whether `key` (a name or a path) names the layer at `path`."""
    return key == path or ("/" not in key and path.split("/")[-1] == key)


@contextlib.contextmanager
def tagged_layer_names(model):
    """Renames each quantizable layer `kcq<i>q` for the duration.

    Yields:
        `{i: path}`. The original names are restored on exit.
    """
    leaves = quantizable_layers(model)
    originals = [layer.name for _, layer in leaves]
    try:
        for i, (_, layer) in enumerate(leaves):
            layer.name = f"kcq{i}q"
        yield {i: path for i, (path, _) in enumerate(leaves)}
    finally:
        for (_, layer), name in zip(leaves, originals):
            layer.name = name


def op_layers(model_t, tags):
    """`{op_index: layer path}` for the weight ops of a tagged file."""
    graph = model_t.subgraphs[0]
    result = {}
    for index, op, weight, _ in flatbuffer.weight_ops(model_t):
        # The weight's own name first: an op's other inputs and fused
        # outputs may carry a neighbouring layer's scope.
        names = flatbuffer.tensor_names(graph, [weight])
        names += flatbuffer.tensor_names(graph, op.outputs)
        for name in names:
            match = _TAG.search(name)
            if match and int(match[1]) in tags:
                result[index] = tags[int(match[1])]
                break
    return result


def op_scope(graph, op):
    """The scope `ai-edge-quantizer` matches recipe regexes against."""
    names = [n for n in flatbuffer.tensor_names(graph, op.outputs) if n]
    if not names:
        names = [n for n in flatbuffer.tensor_names(graph, op.inputs) if n]
    return ";".join(names) + (";" if names else "")


def build_recipe(model_t, layers, per_layer, default, algorithm):
    """The quantizer's recipe: the default for every op, then one entry per
    weight op whose layer has its own precision.

    The quantizer takes the last entry that matches an op and that it has
    a kernel for, so each precision is preceded by its 8-bit fallback and
    followed by its algorithm's entry. Entries with the same regex replace
    each other, hence the equivalent `(?:...)` spellings.
    """
    recipe = _entries(".*", default, algorithm)
    graph = model_t.subgraphs[0]
    for index, path in sorted(layers.items()):
        spec = per_layer.get(path)
        if spec is None or spec == default:
            continue
        scope = op_scope(graph, graph.operators[index])
        recipe += _entries("^" + re.escape(scope) + "$", spec, algorithm)
    return recipe


def _entries(regex, precision, algorithm):
    chain = [precision.fallback(), precision]
    entries = [p.recipe_entry(regex) for p in chain if p is not None]
    rounding = ALGORITHMS[algorithm]
    if rounding != ALGORITHMS["min_max"] and not precision.is_float:
        entries.append(precision.recipe_entry(regex, algorithm))
    # Same matches, distinct keys.
    return [
        {**entry, "regex": "(?:" * i + entry["regex"] + ")" * i}
        for i, entry in enumerate(entries)
    ]


def restore_names(model_t, tags, names):
    """Puts the layers' real names back into the file's tensor names."""

    def real(match):
        index = int(match[1])
        suffix = match[0][len(f"kcq{index}q") :]
        return names[index] + suffix if index in names else match[0]

    for graph in model_t.subgraphs:
        for tensor in graph.tensors:
            text = tensor.name.decode("utf-8") if tensor.name else ""
            if "kcq" in text:
                tensor.name = _TAG.sub(real, text)


def quantize(
    model,
    precision,
    mode,
    float_converter,
    representative_data=None,
    num_calibration_samples=500,
    algorithm="min_max",
    verbose="auto",
    activation_range="min_max",
):
    """Converts `model` with per-layer precision; returns the file's bytes.

    Args:
        model: A built float `keras.Model`.
        precision: A normalized precision dict (see `normalize`).
        mode: The `to_tflite` mode setting the precision of other layers.
        float_converter: `f(model) -> bytes` writing a float32 file.
        representative_data: Calibration inputs (see `to_tflite`).
        num_calibration_samples: Most calibration samples used.
        algorithm: `"min_max"`, `"mse"` (weight ranges chosen for the least
            squared error) or `"gptq"` (error-compensating rounding of
            Dense and Conv2D kernels from the calibration data, see
            `keras_compress.quantization.gptq`).
        verbose: As in `to_tflite`.
        activation_range: `"min_max"` (the calibrated range) or `"mse"`
            (see `mse_activation_ranges`).

    Returns:
        The quantized file's bytes.
    """
    # `to_tflite` checked `algorithm` and `precision` (and the step's
    # constructor for compress()) before any work.
    default = LayerPrecision.from_spec(precision.get("*", MODE_DEFAULTS[mode]))
    per_layer = resolve(model, precision)
    asked = set(per_layer.values()) | {default}
    needs_data = any(p.needs_calibration for p in asked) or (
        algorithm == "gptq" and any(not p.is_float for p in asked)
    )
    if needs_data and representative_data is None:
        raise ValueError(
            "This precision needs calibration data (integer activations "
            f"or `algorithm='{algorithm}'`): pass `representative_data`, "
            "e.g. a few hundred training inputs."
        )
    try:
        from ai_edge_quantizer import quantizer
    except ImportError as error:
        raise ImportError(
            "`precision=` needs Google's ai-edge-quantizer: "
            "`pip install keras-compress[litert]`."
        ) from error

    with tagged_layer_names(model) as tags:
        float_content = float_converter(model)
    samples = None
    if needs_data:
        samples = _calibration_samples(
            float_content, representative_data, num_calibration_samples
        )
    if algorithm == "gptq":
        rounded = _gptq_rounded_copy(model, per_layer, default, samples)
        with tagged_layer_names(rounded) as tags:
            float_content = float_converter(rounded)
    names = {i: path.split("/")[-1] for i, path in tags.items()}
    float_model = flatbuffer.read_model(float_content)
    layers = op_layers(float_model, tags)
    recipe = build_recipe(float_model, layers, per_layer, default, algorithm)

    with (
        _native_logs.captured(show=verbose == 2),
        _quiet_python_stderr(verbose),
        warnings.catch_warnings(),
    ):
        # The calibrating interpreter keeps every tensor, on purpose.
        warnings.filterwarnings(
            "ignore", message=".*experimental_preserve_all_tensors"
        )
        job = quantizer.Quantizer(bytearray(float_content), recipe)
        calibration = None
        if job.need_calibration:
            calibration = job.calibrate(
                _calibration_batches(float_content, samples)
            )
            if activation_range == "mse":
                calibration = mse_activation_ranges(
                    float_content, samples, calibration
                )
        result = job.quantize(calibration, enable_progress_report=False)
    quantized = flatbuffer.read_model(bytes(result.quantized_model))
    final_layers = op_layers(quantized, tags)
    flatbuffer.set_layer_map(quantized, final_layers)
    restore_names(quantized, tags, names)
    content = flatbuffer.write_model(quantized)
    _warn_unmet(content, per_layer, default)
    return content


def _quiet_python_stderr(verbose):
    """Hides the quantizer's progress bars unless asked for (`verbose`)."""
    if verbose == "auto":
        verbose = 1 if sys.stderr.isatty() else 0
    if verbose:
        return contextlib.nullcontext()
    return contextlib.redirect_stderr(io.StringIO())


def _calibration_samples(content, data, limit):
    """`representative_data` as a list of `[x[i:i+1], ...]` samples, checked
    against the float file's inputs."""
    from keras_compress.convert import interpreter
    from keras_compress.convert import tflite

    specs = [
        (
            tuple(None if d < 0 else int(d) for d in detail["shape_signature"]),
            detail["dtype"].__name__,
        )
        for detail in interpreter._make_interpreter(content).get_input_details()
    ]
    return tflite._calibration_samples(data, specs, limit)


def _calibration_batches(content, samples):
    """`{signature: [{input name: batch}, ...]}` for the quantizer."""
    from keras_compress.convert import interpreter

    probe = interpreter._make_interpreter(content)
    details = probe.get_input_details()
    [signature] = probe.get_signature_list()
    runner_inputs = probe.get_signature_runner(signature).get_input_details()
    by_index = {info["index"]: name for name, info in runner_inputs.items()}
    names = [by_index[detail["index"]] for detail in details]
    # The quantizer keeps a moving average (0.95) of each batch's min and
    # max: fed one sample at a time it ends near a typical sample's range
    # and clips the rest (measured: logits in [-9, 8] clipped to [-3.5,
    # 2.3]). Whole batches give it the range of the data.
    batches = []
    for start in range(0, len(samples), _CALIBRATION_BATCH):
        chunk = samples[start : start + _CALIBRATION_BATCH]
        batches.append(
            {
                name: np.concatenate([sample[i] for sample in chunk])
                for i, name in enumerate(names)
            }
        )
    return {signature: batches}


ACTIVATION_RANGES = ("min_max", "mse")


def has_integer_activations(precision, mode):
    """Whether a normalized precision dict gives any layer calibrated
    integer activations."""
    default = precision.get("*", MODE_DEFAULTS[mode])
    specs = [*precision.values(), default]
    return any(LayerPrecision.from_spec(s).needs_calibration for s in specs)


# Values of each activation tensor kept (a random subset) to choose its
# range, and the candidate ranges tried: the observed range scaled by each
# factor.
_MSE_VALUES_PER_TENSOR = 1 << 16
_MSE_RANGE_FACTORS = np.linspace(0.2, 1.0, 41)


def mse_activation_ranges(content, samples, calibration, seed=0):
    """Each activation's calibrated range replaced by the range with the
    least squared error over the calibration samples.

    Min-max calibration spends int8 levels on rare outliers; a narrower
    range clips them and rounds the bulk of the values finer. For each
    activation tensor the quantizer calibrated (the file's outputs keep
    their range: clipping logits can tie the top classes), values are
    gathered by running the float file on `samples`; each candidate range,
    the observed [min, max] scaled by a factor in 0.2..1, is scored by the
    mean squared difference between the values and their int8 rounding,
    clipping included, and the best replaces the calibrated one. A range
    without 0 (a variance) is kept: LiteRT's ranges must hold 0.

    Args:
        content: The float file the quantizer calibrated.
        samples: The calibration samples (`_calibration_samples`).
        calibration: The quantizer's calibration result, `{tensor name:
            {"min": array, "max": array}}`; not modified.
        seed: Seed of the random subset of values kept per tensor.

    Returns:
        A new calibration result.
    """
    from keras_compress.convert import interpreter as interpreter_lib

    full = interpreter_lib._preserving_interpreter(content)
    outputs = {d["name"] for d in full.get_output_details()}
    wanted = {
        d["name"]: d["index"]
        for d in full.get_tensor_details()
        if d["name"] in calibration
        and d["name"] not in outputs
        and np.issubdtype(d["dtype"], np.floating)
    }
    rng = np.random.default_rng(seed)
    per_sample = max(_MSE_VALUES_PER_TENSOR // max(len(samples), 1), 1)
    values = {name: [] for name in wanted}
    current = None
    details = full.get_input_details()
    for sample in samples:
        shapes = [np.shape(x) for x in sample]
        if shapes != current:
            for detail, shape in zip(details, shapes):
                full.resize_tensor_input(detail["index"], shape)
            full.allocate_tensors()
            current = shapes
        for detail, x in zip(details, sample):
            full.set_tensor(detail["index"], x)
        full.invoke()
        for name, index in wanted.items():
            flat = full.get_tensor(index).reshape(-1)
            if flat.size > per_sample:
                flat = rng.choice(flat, per_sample, replace=False)
            values[name].append(flat.astype(np.float32))
    result = {name: dict(entry) for name, entry in calibration.items()}
    for name, parts in values.items():
        low, high = _least_squares_range(np.concatenate(parts))
        result[name]["min"] = np.asarray(low, np.float32).reshape(
            np.shape(calibration[name]["min"])
        )
        result[name]["max"] = np.asarray(high, np.float32).reshape(
            np.shape(calibration[name]["max"])
        )
    return result


def _least_squares_range(x, levels=255):
    """The `[low, high]` whose `levels`-step rounding of `x`, clipping
    included, has the least squared error: the observed range scaled by a
    factor, or kept when it does not contain 0 (a variance, an inverse
    square root: LiteRT's ranges must hold 0, scaling would only move the
    empty end)."""
    low, high = float(x.min()), float(x.max())
    if not low <= 0.0 <= high or high - low <= 0:
        return low, high
    best, best_error = (low, high), np.inf
    for factor in _MSE_RANGE_FACTORS:
        a, b = low * factor, high * factor
        scale = (b - a) / levels
        q = np.round((np.clip(x, a, b) - a) / scale) * scale + a
        error = float(np.mean((q - x) ** 2))
        if error < best_error:
            best, best_error = (a, b), error
    return best


def _gptq_rounded_copy(model, per_layer, default, samples):
    """A copy of `model` whose Dense/Conv2D kernels GPTQ rounded onto the
    grid of their precision (which the quantizer then stores exactly)."""
    from keras_compress.quantization import gptq

    bits = {}
    for path, _ in quantizable_layers(model):
        spec = per_layer.get(path, default)
        if spec.weight_bits and not spec.block_size:
            bits[path] = spec.weight_bits
    copy = rewrite.copy_layer(model)
    inputs = [
        np.concatenate([sample[i] for sample in samples])
        for i in range(len(samples[0]))
    ]
    gptq.round_layers(copy, bits, inputs if len(inputs) > 1 else inputs[0])
    return copy


def _warn_unmet(content, per_layer, default):
    """Warns for each layer whose weights do not hold the precision asked,
    and for layers given a precision that have no weight op in the file."""
    unmet = []
    found = set()
    for tensor in flatbuffer.weight_tensors(content):
        if tensor.layer is None:
            continue
        found.add(tensor.layer)
        asked = per_layer.get(tensor.layer, default)
        if not asked.holds(tensor):
            unmet.append(
                f"'{tensor.layer}' ({tensor.op_name}) asked {asked}, holds "
                f"{tensor.precision}"
            )
    if unmet:
        warnings.warn(
            "ai-edge-quantizer does not write some of the precisions "
            "asked, so these layers keep another precision: "
            + "; ".join(unmet)
            + ". `keras_compress.convert.weight_tensors(file)` lists every "
            "weight tensor of the file.",
            stacklevel=4,
        )
    missing = sorted(set(per_layer) - found)
    if missing:
        warnings.warn(
            f"Layer(s) {', '.join(repr(p) for p in missing)} have no weight "
            "operator in the file (the converter folded or rewrote them), so "
            "their precision could not be applied.",
            stacklevel=4,
        )
