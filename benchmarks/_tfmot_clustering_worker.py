"""tfmot side of `clustering_benchmark.py`; runs in its own process.

tfmot 0.8 only works with legacy Keras 2 (`tf_keras`) and must not share a
process with Keras 3, so `clustering_benchmark.py` starts this script with
`TF_USE_LEGACY_KERAS=1`. It:

1. loads the data and the Keras 3 baseline weights and runs the plain
   fine-tune (`_common.worker_start`, shared with the other workers),
2. fine-tunes with tfmot `cluster_weights(number_of_clusters=N,
   cluster_centroids_init=KMEANS_PLUS_PLUS)` from the same weights, strips,
3. converts both models with `TFLiteConverter.from_keras_model` (float32)
   and writes a JSON report. The main process measures every file (both
   tools) with the same code.

Not meant to be run by hand; see `clustering_benchmark.py --help`.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def _max_unique(model):
    """Most distinct values in any Conv2D/Dense kernel of `model`."""
    return max(
        int(np.unique(layer.get_weights()[0]).size)
        for layer in model.layers
        if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense))
    )


def main(argv=None):
    parser = _common.worker_parser(__doc__)
    parser.add_argument("--number-of-clusters", type=int, required=True)
    args = parser.parse_args(argv)
    data, weights, report, model = _common.worker_start(tf, tf_keras, args)
    (x_train, y_train), (x_test, y_test) = data
    report["plain"]["file"] = _common.write_file(
        args.out_dir, "tfmot_dense.tflite", _common.tflite_from_keras(tf, model)
    )

    # tfmot clustering fine-tune from the same baseline weights.
    clustering = tfmot.clustering.keras
    tf_keras.utils.set_random_seed(args.seed)
    start = _common.build_model(tf_keras)
    start.set_weights(weights)
    clustered = clustering.cluster_weights(
        start,
        number_of_clusters=args.number_of_clusters,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
    )
    _common.compile_model(tf_keras, clustered, args.learning_rate)
    times = _common.fit_timed(
        tf_keras, clustered, x_train, y_train, args.batch_size, args.epochs
    )
    keras_acc = _common.accuracy(clustered, x_test, y_test)
    stripped = clustering.strip_clustering(clustered)
    report["clustered"] = {
        "epoch_times": times,
        "keras_acc": keras_acc,
        "max_unique_values": _max_unique(stripped),
        "file": _common.write_file(
            args.out_dir,
            "tfmot_clustered.tflite",
            _common.tflite_from_keras(tf, stripped),
        ),
    }
    _common.write_worker_report(args.out_dir, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
