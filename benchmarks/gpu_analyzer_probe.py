"""Does LiteRT's own GPU-compatibility check flag what the GPU delegate
cannot run, on the versions installed here?

`tf.lite.experimental.Analyzer.analyze(..., gpu_compatibility=True)` (and
the same analyzer in `ai_edge_litert`) is meant to print "GPU COMPATIBILITY
WARNING" for each op the GPU delegate would leave to the CPU. This script
converts three small models whose files hold ops the delegate does not run
(a Flex op, TOPK_V2, an int32 SHAPE/STRIDED_SLICE chain) and prints what
each analyzer says. `verify()` reports GPU compatibility only once this
prints a warning for every case; until then it says nothing rather than a
"compatible" that is wrong (docs/converting.md, "GPU delegate").

    python benchmarks/gpu_analyzer_probe.py
"""

import contextlib
import io

import tensorflow as tf


def _files():
    def convert(function, select_ops=False):
        concrete = function.get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [concrete], function
        )
        if select_ops:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS,
                tf.lite.OpsSet.SELECT_TF_OPS,
            ]
        return converter.convert()

    spec = [tf.TensorSpec([1, 8, 8], tf.float32)]

    @tf.function(input_signature=spec)
    def flex(t):
        return tf.math.cumprod(t, axis=-1)

    @tf.function(input_signature=spec)
    def top_k(t):
        return tf.math.top_k(tf.reshape(t, [1, 64]), k=4).values

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8], tf.float32)])
    def dynamic_shape(t):
        return tf.reshape(t, [tf.shape(t)[0], 64])

    return {
        "FlexCumprod (a TensorFlow op)": convert(flex, select_ops=True),
        "TOPK_V2": convert(top_k),
        "SHAPE + STRIDED_SLICE on int32": convert(dynamic_shape),
    }


def _tensorflow_analyzer(content):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        tf.lite.experimental.Analyzer.analyze(
            model_content=content, gpu_compatibility=True
        )
    return out.getvalue()


def _litert_analyzer(content):
    from ai_edge_litert import _pywrap_analyzer_wrapper

    return _pywrap_analyzer_wrapper.ModelAnalyzer(content, False, True)


def main():
    from importlib import metadata

    print(
        f"tensorflow {tf.__version__}, "
        f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    )
    for name, content in _files().items():
        for analyzer, analyze in (
            ("tf.lite Analyzer", _tensorflow_analyzer),
            ("ai_edge_litert analyzer", _litert_analyzer),
        ):
            lines = [
                line.strip()
                for line in analyze(content).splitlines()
                if "GPU" in line and "guarantee" not in line
            ]
            print(f"{name:32s} {analyzer:24s} {' | '.join(lines)}")


if __name__ == "__main__":
    main()
