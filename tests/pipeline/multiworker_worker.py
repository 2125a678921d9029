"""One worker of the multi-worker `compress()` test (not a test itself).

`tests/pipeline/test_multiworker.py` starts two of these with `TF_CONFIG`
naming a cluster of two workers on 127.0.0.1. Each one builds a
`MultiWorkerMirroredStrategy` first (it must exist before TensorFlow
touches a device), trains the same small classifier, runs the same
`compress()` call under the strategy and writes what it measured to a
JSON file. Only the chief (index 0) writes to the real output folder; the
other worker runs the same steps (every worker must make the same
training calls) and writes to its own folder.

Every worker fine-tunes on *different* training data (seeded by its
index): the weights only come out identical if the gradients were
all-reduced across the two processes.

Usage: python multiworker_worker.py OUTPUT_FOLDER RESULT_JSON
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import tensorflow as tf  # noqa: E402

# Collective ops are wired when the strategy is made: before any op runs.
strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_compress import analysis  # noqa: E402
from keras_compress import convert  # noqa: E402
from keras_compress import pipeline  # noqa: E402


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    # The same rule as tests/pipeline/conftest.py: three linear classes.
    scores = x @ np.random.default_rng(42).normal(size=(12, 3))
    return x, scores.argmax(axis=1)


def _weights_digest(model):
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def main(output, result_path):
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    index = task["index"]
    train = _data(768, seed=10 + index)
    # Validation data is the same everywhere: the decisions taken on it
    # (budget, back-off) must agree, or the workers' fit calls diverge.
    val = _data(256, seed=1)

    # The trained model every worker starts from: the same seed and data
    # give the same weights (as if each loaded the same file). It is
    # trained without the strategy: Keras 3 `fit` itself fails under
    # MultiWorkerMirroredStrategy (keras-team/keras#20585), which is what
    # compress() works around.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(*_data(768, seed=0), batch_size=64, epochs=8, verbose=0)
    baseline_digest = _weights_digest(model)

    recipe = [pipeline.Prune(0.5, epochs=1), pipeline.QuantizeAware(epochs=1)]
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-int8",
        max_accuracy_drop=0.5,
        recipe=recipe,
        strategy=strategy,
        batch_size=64,
        output=output,
        latency_runs=0,
        verbose=0,
    )
    file_outputs = convert.run_tflite(result.content, val[0])
    file_accuracy = float(np.mean(np.argmax(file_outputs, axis=1) == val[1]))
    pruned = result.report.stages[0]
    summary = {
        "index": index,
        "train_sha256": hashlib.sha256(train[0].tobytes()).hexdigest(),
        "baseline_sha256": baseline_digest,
        "final_sha256": _weights_digest(result.model),
        "original_accuracy": result.report.original.file_accuracy,
        "file_accuracy": file_accuracy,
        "report_file_accuracy": result.report.final.file_accuracy,
        "pruned_sparsity": pruned.sparsity,
        "final_sparsity": analysis.sparsity_report(result.model).total_sparsity,
        "budget_met": result.budget_met,
        "path": result.path,
        "num_replicas": strategy.num_replicas_in_sync,
    }
    with open(result_path, "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
