"""tfmot side of `zoo_benchmark.py --tfmot`; runs in its own process.

tfmot 0.8 only works with legacy Keras 2 (`tf_keras`) and must not share a
process with Keras 3, so `zoo_benchmark.py` starts this script with
`TF_USE_LEGACY_KERAS=1`. For each architecture named on the command line
it builds the `tf_keras.applications` network exactly as the zoo builds
the Keras 3 one (`weights=None`, 32x32x3, 10 logits), applies
`tfmot.quantization.keras.quantize_model` (default 8-bit scheme), trains
one epoch on the zoo's 32 images, converts with
`TFLiteConverter.from_keras_model` and `optimizations=[DEFAULT]` (tfmot's
documented route to an int8 file) and writes `<architecture>.tflite`, or
records the error where a step fails. The main process reads the files
with the same code as its own. Not meant to be run by hand.
"""

import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

# What tests/zoo/architectures.py passes to the Keras 3 builders.
_ARGUMENTS = {
    "MobileNetV2": ("MobileNetV2", {"alpha": 0.35}),
    "MobileNetV3Small": ("MobileNetV3Small", {"alpha": 0.75}),
    "EfficientNetV2B0": ("EfficientNetV2B0", {}),
}
INPUT_SHAPE = (32, 32, 3)


def _build(name):
    class_name, extra = _ARGUMENTS[name]
    tf_keras.utils.set_random_seed(0)
    return getattr(tf_keras.applications, class_name)(
        input_shape=INPUT_SHAPE,
        weights=None,
        classes=10,
        classifier_activation=None,
        **extra,
    )


def _one(name, out_dir):
    rng = np.random.default_rng(0)  # the zoo's images and labels
    x = rng.uniform(0, 255, size=(32, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, 10, size=32)
    step = "build"
    start = time.perf_counter()
    try:
        model = _build(name)
        step = "quantize_model"
        qat = tfmot.quantization.keras.quantize_model(model)
        step = "fit"
        qat.compile(
            optimizer=tf_keras.optimizers.Adam(1e-3),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
        )
        qat.fit(x, y, batch_size=16, epochs=1, verbose=0)
        step = "convert"
        converter = tf.lite.TFLiteConverter.from_keras_model(qat)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        content = converter.convert()
    except Exception as error:  # noqa: BLE001 - reported, not hidden
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        return {
            "error": f"{step}: {message[:300]}",
            "trace": traceback.format_exc()[-2000:],
        }
    path = os.path.join(out_dir, f"{name}.tflite")
    with open(path, "wb") as f:
        f.write(content)
    return {"file": path, "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("architectures", nargs="+", choices=list(_ARGUMENTS))
    args = parser.parse_args(argv)
    report = {name: _one(name, args.out_dir) for name in args.architectures}
    with open(os.path.join(args.out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
