"""tfmot side of `pruning_benchmark.py`; runs in its own process.

tfmot 0.8 only works with legacy Keras 2 (`tf_keras`) and must not share a
process with Keras 3, so `pruning_benchmark.py` starts this script with
`TF_USE_LEGACY_KERAS=1`. It:

1. loads the data with `keras_compress/datasets.py` (imported by file path,
   so that Keras 3 is never imported here),
2. builds the reference CNN in `tf_keras` and loads the Keras 3 baseline
   weights from the `.npz` the main process saved (both tools start from
   identical weights),
3. fine-tunes a plain copy (the timing reference and the dense variant),
4. fine-tunes with tfmot `prune_low_magnitude` + `PolynomialDecay`, strips,
5. converts with `tf.lite.TFLiteConverter.from_keras_model` (float32, with and
   without `EXPERIMENTAL_SPARSITY`) and writes the `.tflite` files,
6. writes a JSON report. The main process measures every file (both tools)
   with the same code, so file accuracy, sizes and latency are comparable.

Steps 1 to 3, the timer and the converter call come from `_common.py`,
shared with `_tfmot_qat_worker.py`. Not meant to be run by hand; see
`pruning_benchmark.py --help`.
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


def _convert(model, sparse):
    sparsity = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    return _common.tflite_from_keras(tf, model, sparsity)


def main(argv=None):
    parser = _common.worker_parser(__doc__)
    parser.add_argument("--final-sparsity", type=float, required=True)
    parser.add_argument("--end-step", type=int, required=True)
    parser.add_argument("--frequency", type=int, required=True)
    args = parser.parse_args(argv)
    data, weights, report, model = _common.worker_start(tf, tf_keras, args)
    (x_train, y_train), (x_test, y_test) = data
    report["plain"]["files"] = {
        "float32": _common.write_file(
            args.out_dir, "tfmot_dense.tflite", _convert(model, False)
        ),
    }

    # tfmot pruning fine-tune from the same baseline weights.
    sparsity = tfmot.sparsity.keras
    schedule = sparsity.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=args.final_sparsity,
        begin_step=0,
        end_step=args.end_step,
        frequency=args.frequency,
    )
    tf_keras.utils.set_random_seed(args.seed)
    start = _common.build_model(tf_keras)
    start.set_weights(weights)
    pruned = sparsity.prune_low_magnitude(start, pruning_schedule=schedule)
    _common.compile_model(tf_keras, pruned, args.learning_rate)
    times = _common.fit_timed(
        tf_keras,
        pruned,
        x_train,
        y_train,
        args.batch_size,
        args.epochs,
        callbacks=[sparsity.UpdatePruningStep()],
    )
    pruned_acc = _common.accuracy(pruned, x_test, y_test)
    stripped = sparsity.strip_pruning(pruned)
    report["pruned"] = {
        "epoch_times": times,
        "keras_acc": pruned_acc,
        "stripped_keras_acc": _common.accuracy(stripped, x_test, y_test),
        "kernel_sparsity": _common.kernel_sparsity(tf_keras, stripped),
        "files": {
            "float32": _common.write_file(
                args.out_dir, "tfmot_pruned.tflite", _convert(stripped, False)
            ),
            "sparse": _common.write_file(
                args.out_dir,
                "tfmot_pruned_sparse.tflite",
                _convert(stripped, True),
            ),
        },
    }
    _common.write_worker_report(args.out_dir, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
