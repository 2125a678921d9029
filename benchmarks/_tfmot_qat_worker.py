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

Steps 1 to 3 and the conversion are `_common.py`'s, as for
`_tfmot_pruning_worker.py` (it imports no Keras at its top, so it can be
imported here). Not meant to be run by hand; see `qat_benchmark.py --help`.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def main(argv=None):
    args = _common.worker_parser(__doc__).parse_args(argv)
    data, weights, report, model = _common.worker_start(tf, tf_keras, args)
    (x_train, y_train), (x_test, y_test) = data
    report["plain"]["file"] = _common.write_file(
        args.out_dir,
        "tfmot_float32.tflite",
        _common.tflite_from_keras(tf, model),
    )

    # tfmot QAT fine-tune from the same baseline weights.
    tf_keras.utils.set_random_seed(args.seed)
    start = _common.build_model(tf_keras)
    start.set_weights(weights)
    qat = tfmot.quantization.keras.quantize_model(start)
    _common.compile_model(tf_keras, qat, args.learning_rate)
    times = _common.fit_timed(
        tf_keras, qat, x_train, y_train, args.batch_size, args.epochs
    )
    report["qat"] = {
        "epoch_times": times,
        "keras_acc": _common.accuracy(qat, x_test, y_test),
        "file": _common.write_file(
            args.out_dir,
            "tfmot_qat_int8.tflite",
            _common.tflite_from_keras(
                tf, qat, optimizations=[tf.lite.Optimize.DEFAULT]
            ),
        ),
    }
    _common.write_worker_report(args.out_dir, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
