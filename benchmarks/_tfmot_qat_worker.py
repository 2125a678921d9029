"""tfmot side of `qat_benchmark.py`; runs in its own process.

tfmot 0.8 only works with legacy Keras 2 (`tf_keras`) and must not share a
process with Keras 3, so `qat_benchmark.py` starts this script with
`TF_USE_LEGACY_KERAS=1`. It:

1. loads the data with `keras_compress/datasets.py` (by file path, so that
   Keras 3 is never imported here),
2. builds the reference CNN in `tf_keras` with the Keras 3 baseline weights
   from the `.npz` the main process saved (both tools start from identical
   weights),
3. fine-tunes a plain copy (the timing reference and the float32 file),
4. fine-tunes `tfmot.quantization.keras.quantize_model` of the baseline
   (default 8-bit scheme) and converts it with
   `TFLiteConverter.from_keras_model` and `optimizations=[DEFAULT]`,
5. writes the `.tflite` files and a JSON report; the main process measures
   every file of both tools with the same code.

The reference CNN, timer, data loading and float conversion are those of
`_tfmot_pruning_worker.py`. Not meant to be run by hand; see
`qat_benchmark.py --help`.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _tfmot_pruning_worker as shared  # noqa: E402


def _convert_int8(model):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--datasets-py", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--learning-rate", type=float, required=True)
    args = parser.parse_args(argv)

    datasets = shared._load_datasets_module(args.datasets_py)
    name, (x_train, y_train), (x_test, y_test) = datasets.load_demo_data(
        max_train=args.max_train, max_test=args.max_test, seed=args.data_seed
    )
    with np.load(args.weights) as data:
        baseline_weights = [data[f"w{i:02d}"] for i in range(len(data.files))]

    def baseline():
        model = shared.build_model()
        model.set_weights(baseline_weights)
        return model

    fit_kwargs = {
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "verbose": 0,
    }
    report = {
        "dataset": name,
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "tensorflow_model_optimization": tfmot.__version__,
        },
    }
    model = baseline()
    report["baseline_keras_acc"] = shared._accuracy(model, x_test, y_test)

    # Plain fine-tune: the timing reference and the float32 file.
    tf_keras.utils.set_random_seed(args.seed)
    shared._compile(model, args.learning_rate)
    timer = shared.EpochTimer()
    model.fit(x_train, y_train, callbacks=[timer], **fit_kwargs)
    report["plain"] = {
        "epoch_times": timer.times,
        "keras_acc": shared._accuracy(model, x_test, y_test),
        "file": shared._write(
            args.out_dir, "tfmot_float32.tflite", shared._convert(model, False)
        ),
    }

    # tfmot QAT fine-tune from the same baseline weights.
    tf_keras.utils.set_random_seed(args.seed)
    qat = tfmot.quantization.keras.quantize_model(baseline())
    shared._compile(qat, args.learning_rate)
    timer = shared.EpochTimer()
    qat.fit(x_train, y_train, callbacks=[timer], **fit_kwargs)
    report["qat"] = {
        "epoch_times": timer.times,
        "keras_acc": shared._accuracy(qat, x_test, y_test),
        "file": shared._write(
            args.out_dir, "tfmot_qat_int8.tflite", _convert_int8(qat)
        ),
    }
    with open(os.path.join(args.out_dir, "tfmot_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
