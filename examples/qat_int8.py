"""Train a CNN quantization-aware and ship a verified int8 LiteRT file.

The story: a Keras 3 image classifier is trained in float32. A copy made
with `kc.quantization.quantize_model` (BatchNorms folded, fake-quant on
weights and activations) fine-tunes briefly at a low learning rate, then
`kc.convert.to_tflite(qat, "int8")` turns it into a file with integer
kernels and no calibration data. The file is run in the LiteRT interpreter
and compared with Keras, next to the float32 file and a post-training
int8 file (calibrated, no fine-tuning) of the same model.

Run it (Fashion-MNIST from Debian's `dataset-fashion-mnist` if installed,
else scikit-learn's digits or synthetic images); the defaults take about a
minute on two CPU cores:

    python examples/qat_int8.py
    python examples/qat_int8.py --max-train 60000 --epochs 3 --output out/qat
"""

import argparse
import os
import tempfile

import keras

import keras_compress as kc
from keras_compress import demo


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=6000)
    parser.add_argument("--max-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--qat-epochs",
        type=int,
        default=1,
        help="quantization-aware fine-tuning epochs",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="folder for the .tflite files (default: a new temporary folder)",
    )
    args = parser.parse_args()

    name, (x_train, y_train), (x_test, y_test) = kc.datasets.load_demo_data(
        max_train=args.max_train, max_test=args.max_test
    )
    print(f"data: {name}, {len(x_train)} training images")
    keras.utils.set_random_seed(0)
    model = demo.reference_cnn(x_train.shape[1:], int(y_train.max()) + 1)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, verbose=2)

    # QAT starts from the trained float weights: a short fine-tune at a low
    # learning rate learns the activation ranges and adapts the weights to
    # int8 rounding.
    qat = kc.quantization.quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    qat.fit(x_train, y_train, batch_size=128, epochs=args.qat_epochs, verbose=2)

    out_dir = args.output or tempfile.mkdtemp(prefix="qat_int8_")
    os.makedirs(out_dir, exist_ok=True)
    float_path = os.path.join(out_dir, "float32.tflite")
    ptq_path = os.path.join(out_dir, "ptq_int8.tflite")
    qat_path = os.path.join(out_dir, "qat_int8.tflite")
    float_blob = kc.convert.to_tflite(model, path=float_path)
    # Post-training quantization needs calibration inputs; the QAT model
    # carries its learned ranges in its fake-quant ops instead.
    ptq_blob = kc.convert.to_tflite(
        model,
        "int8",
        representative_data=x_train[:200],
        path=ptq_path,
        verbose=0,
    )
    qat_blob = kc.convert.to_tflite(qat, "int8", path=qat_path)

    print("\nfloat32 file:")
    print(kc.convert.verify(model, float_blob, x_test, y_test))
    print("\npost-training int8 file (no fine-tuning):")
    print(kc.convert.verify(model, ptq_blob, x_test, y_test))
    print("\nquantization-aware int8 file:")
    report = kc.convert.verify(qat, qat_blob, x_test, y_test)
    print(report)
    if report.float_ops:
        print(
            "warning: some operators still compute in float: "
            + ", ".join(report.float_ops)
        )
    print(
        f"\nsize: {len(qat_blob) / len(float_blob):.2f}x the float32 file;"
        f" written to {qat_path}"
    )


if __name__ == "__main__":
    main()
