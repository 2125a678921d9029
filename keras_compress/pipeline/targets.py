"""Deployment targets of `compress()`: a file format and a precision."""

import warnings

from keras_compress import convert

# name -> (file format, LiteRT mode or ONNX precision)
TARGETS = {
    "tflite-float32": ("tflite", "float32"),
    "tflite-float16": ("tflite", "float16"),
    "tflite-dynamic": ("tflite", "dynamic"),
    "tflite-int8": ("tflite", "int8"),
    # For NPUs and microcontrollers: int8 input and output, and no op that
    # computes in float (refused at conversion otherwise).
    "tflite-integer-only": ("tflite", "int8"),
    "onnx": ("onnx", "float32"),
    "onnx-float16": ("onnx", "float16"),
}


def check_target(target):
    """Raises a `ValueError` listing the targets unless `target` is one."""
    if target not in TARGETS:
        raise ValueError(
            f"Unknown `target`={target!r}. Expected one of "
            f"{', '.join(TARGETS)}."
        )


def file_suffix(target):
    return "." + TARGETS[target][0]


def is_integer_target(target):
    return TARGETS[target][1] == "int8"


def dense_reference_target(target):
    """The float32 target of the same format: what sizes are compared with."""
    return "onnx" if TARGETS[target][0] == "onnx" else "tflite-float32"


def convert_to_target(model, target, calibration_data=None, ptq=None):
    """Converts `model` for `target`; returns the file's bytes.

    Args:
        model: A Keras model (plain, stripped, or quantization-aware).
        target: A name from `TARGETS`.
        calibration_data: Inputs for full-integer calibration of a model
            without fake-quant ranges (`"tflite-int8"` only), and for a
            `ptq` step.
        ptq: A `QuantizePostTraining` step setting per-layer precision,
            or `None`.
    """
    check_target(target)
    file_format, precision = TARGETS[target]
    if file_format == "onnx":
        return convert.to_onnx(model, float16=precision == "float16")
    options = {}
    if ptq is not None:
        options.update(
            precision=ptq.precision,
            algorithm=ptq.algorithm,
            activation_range=ptq.activation_range,
            representative_data=calibration_data,
        )
    elif precision == "int8":
        # Not used for a quantization-aware model: it has its ranges.
        options["representative_data"] = calibration_data
    if target == "tflite-integer-only":
        options["integer_only"] = True
    return convert.to_tflite(model, precision, verbose=0, **options)


def check_integer_only(model, x):
    """Refuses, before any training, a model whose QAT int8 file would
    still compute some op in float (`"tflite-integer-only"`).

    The ops a file computes in float depend on the architecture, not on
    the trained values: a QAT copy of `model`, its ranges observed on `x`,
    is converted once and checked (`to_tflite(integer_only=True)`).
    """
    import keras

    from keras_compress import quantization

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its own float-layer warnings
        qat = quantization.quantize_model(model)
    sample = keras.tree.map_structure(lambda a: a[:8], x)
    qat(sample, training=True)  # the observers get ranges
    try:
        convert.to_tflite(qat, "int8", integer_only=True, verbose=0)
    except ValueError as error:
        raise ValueError(
            f"target='tflite-integer-only', checked before training: {error}"
        ) from None


def check_ptq_recipe(recipe, target):
    """Refuses a `ptq` step that cannot reach the file (before training)."""
    names = [step.name for step in recipe.steps]
    if "ptq" not in names:
        return
    if target == "tflite-integer-only":
        raise ValueError(
            "A 'ptq' step may keep layers float, which "
            "target='tflite-integer-only' refuses. Quantize with a "
            "'quantize' (QAT) step, or use target='tflite-int8'."
        )
    if TARGETS[target] not in (
        ("tflite", "float32"),
        ("tflite", "dynamic"),
        ("tflite", "int8"),
    ):
        raise ValueError(
            f"A 'ptq' step sets the precision of a LiteRT file; `target`="
            f"{target!r} cannot take it. Use 'tflite-int8', "
            "'tflite-dynamic' or 'tflite-float32'."
        )
    if "quantize" in names:
        raise ValueError(
            "A recipe holds a 'quantize' (QAT) step or a 'ptq' step, not "
            "both: the file's precision comes from one of them."
        )
    if names[-1] != "ptq" or names.count("ptq") > 1:
        raise ValueError(
            "A 'ptq' step sets the precision of the converted file: make it "
            "the last step of the recipe, once."
        )
