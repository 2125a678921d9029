"""How far does the converter carry int16 activations through a LayerNorm
written with 16-bit fake quantization (a 16x8 LayerNorm from QAT)?

The three int8 QAT cells of the zoo under the 98 % bar (docs/zoo.md) are
graphs that amplify one-step rounding differences, DINOv2's first
LayerNorm most (a row's reciprocal standard deviation of 48 turns one step
into 12). Computing the LayerNorm's inner tensors in int16 would shrink
those steps 256-fold. This script writes a LayerNorm over the last axis of
an int8 input with `tf.quantization.fake_quant_with_min_max_vars`: int8 at
its input and output, the inner tensors (mean, centered values, variance,
reciprocal standard deviation) at `num_bits` 8 or 16, converts it with
`TFLiteConverter` (`optimizations=[DEFAULT]`), and prints per case whether
the converter accepts it, the ops and tensor types of the file, and the
file's largest difference from the TensorFlow graph in output steps. The
stages stop the int16 region after the centering, after the variance, or
carry it to the end.

    python benchmarks/int16_layer_norm_probe.py
"""

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

_SHAPE = (1, 5, 16)
_OUT_RANGE = 8.0


def _layer_norm(inner_bits, stage, requantize):
    """A fake-quantized LayerNorm; int16 tensors up to `stage`."""
    fq = tf.quantization.fake_quant_with_min_max_vars
    wide = inner_bits == 16

    def inner(x, low, high, inside=True):
        bits = 16 if wide and inside else 8
        return fq(x, low, high, num_bits=bits, narrow_range=bits == 16)

    @tf.function(input_signature=[tf.TensorSpec(_SHAPE, tf.float32)])
    def function(x):
        x = fq(x, -4.0, 4.0, num_bits=8)
        if wide and requantize:
            x = inner(x, -4.0, 4.0)  # an explicit int8 -> int16 QUANTIZE
        mean = inner(tf.reduce_mean(x, -1, keepdims=True), -4.0, 4.0)
        centered = inner(x - mean, -8.0, 8.0)
        if stage == "center":
            return fq(centered, -8.0, 8.0, num_bits=8)
        variance = inner(
            tf.reduce_mean(centered * centered, -1, keepdims=True), 0.0, 64.0
        )
        in_full = stage == "full"
        inv_std = inner(tf.math.rsqrt(variance + 1e-3), 0.0, 64.0, in_full)
        return fq(centered * inv_std, -_OUT_RANGE, _OUT_RANGE, num_bits=8)

    return function


def _probe(name, function):
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        content = converter.convert()
    except Exception as error:  # noqa: BLE001 - the message is the result
        lines = [line for line in str(error).splitlines() if "error:" in line]
        reason = lines[0].split("error:", 1)[1] if lines else str(error)
        print(f"{name}: the converter refuses it:{reason}")
        return
    interpreter = Interpreter(model_content=content)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    try:
        interpreter.allocate_tensors()
    except RuntimeError as error:
        print(
            f"{name}: converts (ops {' '.join(ops)}), but LiteRT refuses "
            f"the file: {str(error).splitlines()[0]}"
        )
        return
    types = sorted(
        {t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    )
    x = np.random.RandomState(0).uniform(-3, 3, _SHAPE).astype(np.float32)
    x[0, 0] = 0.3 + 0.01 * np.arange(_SHAPE[-1])  # a low-variance row
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    output = interpreter.get_tensor(
        interpreter.get_output_details()[0]["index"]
    )
    step = 2 * _OUT_RANGE / 255
    worst = np.abs(output - function(x).numpy()).max() / step
    print(
        f"{name}: converts; ops {' '.join(ops)}; tensor types "
        f"{', '.join(types)}; largest difference {worst:.0f} output steps"
    )


def main():
    print(f"TensorFlow {tf.__version__}")
    _probe("int8 throughout", _layer_norm(8, "full", False))
    for stage in ("center", "variance", "full"):
        for requantize in (False, True):
            _probe(
                f"int16 to the {stage}"
                + (", requantized int8 input" if requantize else ""),
                _layer_norm(16, stage, requantize),
            )


if __name__ == "__main__":
    main()
