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

Not meant to be run by hand; see `pruning_benchmark.py --help`.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402


def _load_datasets_module(path):
    spec = importlib.util.spec_from_file_location("_kc_datasets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EpochTimer(tf_keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def build_model():
    """The reference CNN of BENCHMARKS.md, in tf_keras."""
    layers = tf_keras.layers
    return tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10),
        ]
    )


def _compile(model, learning_rate):
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _kernel_sparsity(model):
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense)):
            kernel = layer.get_weights()[0]
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / total


def _convert(model, sparse):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def _write(folder, name, content):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


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
    parser.add_argument("--final-sparsity", type=float, required=True)
    parser.add_argument("--end-step", type=int, required=True)
    parser.add_argument("--frequency", type=int, required=True)
    args = parser.parse_args(argv)

    datasets = _load_datasets_module(args.datasets_py)
    name, (x_train, y_train), (x_test, y_test) = datasets.load_demo_data(
        max_train=args.max_train, max_test=args.max_test, seed=args.data_seed
    )
    with np.load(args.weights) as data:
        baseline_weights = [data[f"w{i:02d}"] for i in range(len(data.files))]

    def baseline():
        model = build_model()
        model.set_weights(baseline_weights)
        return model

    fit_kwargs = {
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "verbose": 0,
    }
    report = {
        "dataset": name,
        "num_train": len(x_train),
        "num_test": len(x_test),
        "versions": {
            "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__,
            "tensorflow_model_optimization": importlib.metadata.version(
                "tensorflow-model-optimization"
            ),
        },
    }

    # Baseline accuracy in tf_keras: checks the weight transfer.
    model = baseline()
    report["baseline_keras_acc"] = _accuracy(model, x_test, y_test)

    # Plain fine-tune: the timing reference and the dense variant.
    tf_keras.utils.set_random_seed(args.seed)
    _compile(model, args.learning_rate)
    timer = EpochTimer()
    model.fit(x_train, y_train, callbacks=[timer], **fit_kwargs)
    report["plain"] = {
        "epoch_times": timer.times,
        "keras_acc": _accuracy(model, x_test, y_test),
        "files": {
            "float32": _write(
                args.out_dir, "tfmot_dense.tflite", _convert(model, False)
            ),
        },
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
    pruned = sparsity.prune_low_magnitude(baseline(), pruning_schedule=schedule)
    _compile(pruned, args.learning_rate)
    timer = EpochTimer()
    pruned.fit(
        x_train,
        y_train,
        callbacks=[sparsity.UpdatePruningStep(), timer],
        **fit_kwargs,
    )
    pruned_acc = _accuracy(pruned, x_test, y_test)
    stripped = sparsity.strip_pruning(pruned)
    report["pruned"] = {
        "epoch_times": timer.times,
        "keras_acc": pruned_acc,
        "stripped_keras_acc": _accuracy(stripped, x_test, y_test),
        "kernel_sparsity": _kernel_sparsity(stripped),
        "files": {
            "float32": _write(
                args.out_dir, "tfmot_pruned.tflite", _convert(stripped, False)
            ),
            "sparse": _write(
                args.out_dir,
                "tfmot_pruned_sparse.tflite",
                _convert(stripped, True),
            ),
        },
    }
    with open(os.path.join(args.out_dir, "tfmot_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
