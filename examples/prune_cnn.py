"""Prune a trained CNN to 80 % sparsity and ship a small, verified LiteRT file.

The story: a Keras 3 image classifier is trained; it is pruned while
fine-tuning, stripped, converted to LiteRT in the sparse format, and the
converted file is checked against the Keras model on the test set.

Run it (Fashion-MNIST from Debian's `dataset-fashion-mnist` if installed,
else scikit-learn's digits or synthetic images):

    pip install -e ".[demo]"
    python examples/prune_cnn.py --max-train 12000
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import keras_compress as kc
from keras_compress import demo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument(
        "--output",
        default=None,
        help="folder for the .tflite file (default: a new temporary folder)",
    )
    args = parser.parse_args()

    name, (x_train, y_train), (x_test, y_test) = kc.datasets.load_demo_data(
        max_train=args.max_train
    )
    print(f"data: {name}, {len(x_train)} training images")
    model = demo.reference_cnn(x_train.shape[1:], int(y_train.max()) + 1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, verbose=2)

    # Prune while fine-tuning: sparsity ramps up over 70 % of the steps.
    epochs = args.epochs
    steps = int(np.ceil(len(x_train) / 128)) * epochs
    pruned = kc.pruning.prune_low_magnitude(
        model,
        pruning_schedule=kc.pruning.PolynomialDecay(
            0.0,
            args.sparsity,
            begin_step=0,
            end_step=int(0.7 * steps),
            frequency=50,
        ),
    )
    pruned.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    pruned.fit(
        x_train,
        y_train,
        batch_size=128,
        epochs=epochs,
        verbose=2,
        callbacks=[kc.pruning.UpdatePruningStep()],
    )

    small = kc.pruning.strip_pruning(pruned)
    print(kc.analysis.sparsity_report(small))

    out_dir = args.output or tempfile.mkdtemp(prefix="prune_cnn_")
    os.makedirs(out_dir, exist_ok=True)
    dense_blob = kc.convert.to_tflite(model, sparse=False)
    path = os.path.join(out_dir, "pruned.tflite")
    pruned_blob = kc.convert.to_tflite(small, path=path)
    print("\ndense model file:")
    print(kc.convert.verify(model, dense_blob, x_test, y_test))
    print("\npruned model file (sparse format):")
    print(kc.convert.verify(small, pruned_blob, x_test, y_test))
    print(
        f"\nsize: {len(pruned_blob) / len(dense_blob):.2f}x the dense file;"
        f" written to {path}"
    )


if __name__ == "__main__":
    main()
