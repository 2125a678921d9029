"""Compress a trained CNN to a file within accuracy, size and latency budgets.

The story: a Keras 3 image classifier is trained. `kc.compress` is given
the training and validation data, a deployment target and the accuracy the
file may lose; it scans each layer's sensitivity to pruning, prunes while
distilling from the original model, trains quantization-aware for an int8
target, converts, verifies the *file* on the validation data and backs off
to lighter pruning until the budget holds. It writes the file, a report
(Markdown, HTML, JSON, plots), the recipe it used and each stage's model
into the output folder.

Run it (Fashion-MNIST from Debian's `dataset-fashion-mnist` if installed,
else scikit-learn's digits or synthetic images); the defaults take a few
minutes on two CPU cores:

    python examples/compress_to_budget.py
    python examples/compress_to_budget.py --target onnx --max-accuracy-drop 0.02
    python examples/compress_to_budget.py --max-latency 0.25 --max-bytes 0.12

With `--max-latency` or `--max-bytes` (a fraction of the float32 file's
figure, or a value with a unit such as `60KB` or `150us`) it searches the
channels and weight bits of each layer instead of sparsity, measuring
candidate files, and the report shows which budget held.

The same from the command line, for a saved model and an .npz of data:

    keras-compress compress model.keras --data data.npz --max-drop 0.01 -o out/
"""

import argparse
import os

import keras

import keras_compress as kc
from keras_compress import demo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=6000)
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="training epochs, and fine-tuning epochs of each step",
    )
    parser.add_argument(
        "--target",
        default="tflite-int8",
        choices=sorted(kc.pipeline.TARGETS),
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.01,
        help="accuracy the file may lose (0.01 is one point)",
    )
    parser.add_argument(
        "--max-bytes",
        type=kc.pipeline.budgets.from_text,
        default=None,
        help="largest file: a fraction of the float32 file or e.g. 60KB",
    )
    parser.add_argument(
        "--max-latency",
        type=kc.pipeline.budgets.from_text,
        default=None,
        help="largest latency: a fraction of the float32 file's or e.g. 150us",
    )
    parser.add_argument("--output", default="out/compress_to_budget")
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=100,
        help="timed single-sample runs of each file (0 skips)",
    )
    args = parser.parse_args()

    name, (x_train, y_train), (x_test, y_test) = kc.datasets.load_demo_data(
        max_train=args.max_train, max_test=args.max_test
    )
    print(f"data: {name}, {len(x_train)} training images")
    keras.utils.set_random_seed(0)
    model = demo.reference_cnn(x_train.shape[1:], int(y_train.max()) + 1)
    # compress() fine-tunes with the model's compiled loss.
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, verbose=2)

    result = kc.compress(
        model,
        (x_train, y_train),
        (x_test, y_test),
        target=args.target,
        max_accuracy_drop=args.max_accuracy_drop,
        max_bytes=args.max_bytes,
        max_latency=args.max_latency,
        epochs=args.epochs,
        output=args.output,
        # Running this example again replaces its own earlier results.
        overwrite=True,
        latency_runs=args.latency_runs,
        verbose=1,
    )

    print()
    print(result.report.to_markdown())
    final, original = result.report.final, result.report.original
    print(
        f"budget met: {result.budget_met}; file accuracy "
        f"{final.file_accuracy:.4f} vs {original.file_accuracy:.4f}, "
        f"{final.bytes / original.bytes:.2f}x the float32 file's bytes "
        f"({final.gzip_bytes / original.gzip_bytes:.2f}x gzipped)"
    )
    for budget, check in result.report.budget_checks.items():
        verdict = "held" if check["held"] else "FAILED"
        print(
            f"  {budget}: {check['value']:,.4g} <= {check['limit']:,.4g}? "
            f"{verdict}"
        )
    print(f"file: {result.path}")
    report_path = os.path.join(args.output, "report.md")
    print(f"report: {report_path} (and report.html, report.json)")


if __name__ == "__main__":
    main()
