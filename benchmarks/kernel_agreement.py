"""Do LiteRT's own CPU kernels agree on a QAT int8 file of a zoo model?

The zoo's QAT cells ask for >= 98 % of a file's outputs within one
quantization step of the Keras model (docs/zoo.md). Where a cell misses,
this tells whether the file itself is ill-conditioned: it runs the same
file with XNNPACK (LiteRT's default CPU delegate) and with the builtin
kernels only, and compares each with the other and with Keras. If the two
kernel sets disagree as much as the file and Keras do, no simulation of
LiteRT's rounding in QAT can close the gap.

    python benchmarks/kernel_agreement.py DINOv2 DenseNet121
    python benchmarks/kernel_agreement.py DINOv2 --float-layer-norms

Each architecture is built, quantized and trained exactly as in its zoo
cell (`tests/zoo/test_zoo.py`: one epoch on 32 images), then run on the
zoo's probe images.
"""

import argparse
import pathlib
import sys
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(content, images, delegates):
    # The library's interpreter factory: with `delegates=False` it takes the
    # builtin kernels only (no XNNPACK), as `run_tflite` does on a refusal.
    from keras_compress.convert import interpreter as litert_interpreter

    interpreter = litert_interpreter._make_interpreter(
        content, delegates=delegates
    )
    [input_detail] = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], images)
    interpreter.invoke()
    [output_detail] = interpreter.get_output_details()
    return interpreter.get_tensor(output_detail["index"]).astype(np.float32)


def measure(name, float_layer_norms=False):
    """One architecture's row: `{pair: fraction within one step}`."""
    import keras

    import keras_compress as kc
    from tests.conformance import test_matrix
    from tests.zoo import architectures

    keras.utils.set_random_seed(0)
    model, x, y = architectures.build(name)
    if float_layer_norms:

        def select(layer):
            return not isinstance(layer, keras.layers.LayerNormalization)

    else:
        select = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = kc.quantization.quantize_model(model, layers_to_quantize=select)
        test_matrix._fit(qat, x, y)
        content = kc.convert.to_tflite(qat, "int8", verbose=0)
    images = architectures.probe_inputs(name)
    if not isinstance(images, np.ndarray):
        raise SystemExit(f"{name}: only single-image-input models are run")
    step = test_matrix._output_step(content)
    outputs = {
        "keras": test_matrix._predict(qat, images),
        "xnnpack": _run(content, images, delegates=True),
        "builtin": _run(content, images, delegates=False),
    }

    def within_one_step(a, b):
        diff = np.abs(outputs[a] - outputs[b])
        return float(np.mean(diff <= step * 1.001)), float(diff.max() / step)

    return {
        pair: within_one_step(*pair)
        for pair in (
            ("xnnpack", "keras"),
            ("builtin", "keras"),
            ("xnnpack", "builtin"),
        )
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architectures", nargs="+")
    parser.add_argument(
        "--float-layer-norms",
        action="store_true",
        help="leave LayerNormalization layers out of QAT",
    )
    args = parser.parse_args()
    print(
        "| architecture | XNNPACK vs Keras | builtin vs Keras | "
        "XNNPACK vs builtin |"
    )
    print("|---|---|---|---|")
    for name in args.architectures:
        row = measure(name, args.float_layer_norms)
        cells = [
            f"{fraction:.2%} (max {steps:.0f} steps)"
            for fraction, steps in row.values()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
