"""Converting QAT models and checking the LiteRT file, for the QAT tests.

The file is converted from the fake-quant ranges alone, with no
calibration data, the way a QAT model is meant to be converted:
`keras_compress.convert.to_tflite(model, "int8")` still asks for
representative data today, so the tests call the converter directly.
"""

import dataclasses
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from ai_edge_litert.interpreter import OpResolverType  # noqa: E402

# How closely the file must follow the Keras QAT model.
#
# Keras computes each layer in float32 and then rounds the result to the
# int8 grid (fake quant); LiteRT accumulates exactly in int32 (with the
# bias rounded to int32) and rounds once with a fixed-point multiplier. The
# two can only disagree for a value within a rounding error of a rounding
# boundary (half a step): that element then differs by one step, and the
# difference moves on through the next layers, where it is usually
# absorbed and sometimes adds up. Measured on the models of these tests
# (3 seeds, 2,000-3,000 output elements each): 75-89 % of the output
# elements are bit-identical, 98.2-100 % within one output step, all within
# two steps. We require 98 % within one step and every element within 3
# steps; a wrong range, scale or folding gives errors of many steps.
MIN_FRACTION_WITHIN_ONE_STEP = 0.98
MAX_STEPS = 3


def convert_qat(model, int8_io=False):
    """A QAT model's LiteRT flatbuffer, from its fake-quant ranges."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="kc_qat_") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


@dataclasses.dataclass
class Op:
    """An operator of the file with its tensors."""

    name: str
    inputs: list  # tensor details (None for an omitted optional input)
    outputs: list


def ops_of(content):
    """The operators of a file with full tensor details, in order."""
    # Without the XNNPACK delegate, which would replace ops by DELEGATE.
    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}

    def tensors(indices):
        found = []
        for index in indices:
            detail = details.get(int(index)) if index >= 0 else None
            if detail is not None and detail["index"] is not None:
                detail = dict(detail)
                try:
                    detail["value"] = interpreter.get_tensor(detail["index"])
                except ValueError:
                    detail["value"] = None
            found.append(detail)
        return found

    return [
        Op(op["op_name"], tensors(op["inputs"]), tensors(op["outputs"]))
        for op in interpreter._get_ops_details()
    ]


def _is_float(tensor):
    return tensor is not None and np.dtype(tensor["dtype"]) == np.float32


def float_ops_inside(content):
    """Ops with a float32 tensor, other than the input QUANTIZE ops and the
    output DEQUANTIZE ops. Empty for a file integer end to end."""
    ops = ops_of(content)
    found = []
    for op in ops:
        if op.name == "QUANTIZE" and _is_float(op.inputs[0]):
            continue  # float model input -> int8
        if op.name == "DEQUANTIZE" and _is_float(op.outputs[0]):
            continue  # int8 -> float model output
        if any(_is_float(t) for t in op.inputs + op.outputs):
            found.append(op.name)
    return found


def check_integer_end_to_end(content, num_inputs=1, num_outputs=1):
    """Asserts that only the I/O conversions of the file are float."""
    ops = ops_of(content)
    names = [op.name for op in ops]
    assert float_ops_inside(content) == [], names
    quantize = [
        op for op in ops if op.name == "QUANTIZE" and _is_float(op.inputs[0])
    ]
    dequantize = [
        op for op in ops if op.name == "DEQUANTIZE" and _is_float(op.outputs[0])
    ]
    assert len(quantize) == num_inputs, names
    assert len(dequantize) == num_outputs, names


def weight_tensors(content, op_name):
    """`[(values, scales)]` of the weights of every `op_name` in the file.

    The weights are the second input of CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED and TRANSPOSE_CONV.
    """
    found = []
    for op in ops_of(content):
        if op.name == op_name:
            tensor = op.inputs[1]
            scales = tensor["quantization_parameters"]["scales"]
            found.append((tensor["value"], scales))
    return found


def output_step(content):
    """The quantization step (scale) of the file's int8 output tensor."""
    ops = ops_of(content)
    dequantize = [op for op in ops if op.name == "DEQUANTIZE"]
    if dequantize:
        return float(dequantize[-1].inputs[0]["quantization"][0])
    interpreter = Interpreter(model_content=content)
    return float(interpreter.get_output_details()[0]["quantization"][0])


def check_matches_keras(
    keras_outputs, file_outputs, step, min_fraction=MIN_FRACTION_WITHIN_ONE_STEP
):
    """Asserts the file follows the Keras QAT model (see the tolerance)."""
    diff = np.abs(np.asarray(keras_outputs) - np.asarray(file_outputs))
    within_one = np.mean(diff <= step * 1.001)
    assert within_one >= min_fraction, (
        f"only {within_one:.2%} of the outputs within one step ({step:.3g})"
        f"; max diff {diff.max():.3g}"
    )
    assert diff.max() <= MAX_STEPS * step * 1.001, (
        f"max diff {diff.max():.3g} > {MAX_STEPS} steps of {step:.3g}"
    )
    return within_one, float(diff.max() / step)


def check_integer_file_follows_keras(model, x):
    """Converts a trained QAT `model` to int8 and asserts that the file is
    integer end to end and follows the Keras model on `x`.

    Returns:
        The file's bytes.
    """
    content = convert_qat(model)
    check_integer_end_to_end(content)
    outputs = run(content, x)
    check_matches_keras(predict(model, x), outputs, output_step(content))
    return content


def toy_images(shape, num_classes, n, seed):
    """A separable image problem: a fixed pattern per class plus noise."""
    patterns = np.random.default_rng(123).uniform(
        0, 1, size=(num_classes, *shape)
    )
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    x = patterns[y] + 0.3 * rng.normal(size=(n, *shape))
    return np.clip(x, 0, 1).astype("float32"), y


def compile_and_fit(model, x, y, epochs=1, learning_rate=1e-3, **kwargs):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


def run(content, x):
    """The file's outputs on `x` (float I/O, or int8 I/O dequantized)."""
    from keras_compress.convert import run_tflite

    return run_tflite(content, x)


def observe(model, x, batch_size=64):
    """Sets the activation ranges of a QAT model from `x`, without training.

    Calling the model eagerly with `training=True` updates the observers
    (and nothing else for models without dropout or float BatchNorms):
    much faster than `fit` for tests that only need ranges.
    """
    for start in range(0, len(x), batch_size):
        model(x[start : start + batch_size], training=True)
    return model


def predict(model, x):
    """Eager inference (faster than `model.predict` for a few samples)."""
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))
