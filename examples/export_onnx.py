"""Train a small CNN and export it to ONNX, verified with ONNX Runtime.

The story: a Keras 3 image classifier is trained and written as an ONNX
model with `kc.convert.to_onnx` (traced from the model's forward pass, with
a free batch dimension), optionally also with float16 weights and
activations (`--float16`, half the bytes, for GPUs; float32 inputs and
outputs). `kc.convert.verify` runs each file in ONNX Runtime and compares
it with Keras on the test set.

Run it (Fashion-MNIST from Debian's `dataset-fashion-mnist` if installed,
else scikit-learn's digits or synthetic images; needs
`pip install keras-compress[onnx]`):

    python examples/export_onnx.py
    python examples/export_onnx.py --float16 --output out/onnx
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
        "--float16",
        action="store_true",
        help="also write a float16 ONNX model (float32 inputs and outputs)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="folder for the .onnx files (default: a new temporary folder)",
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

    out_dir = args.output or tempfile.mkdtemp(prefix="export_onnx_")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.onnx")
    blob = kc.convert.to_onnx(model, path)
    print("\nONNX file (float32):")
    print(kc.convert.verify(model, blob, x_test, y_test))
    # The batch dimension is free: ONNX Runtime runs any batch size.
    outputs = kc.convert.run_onnx(blob, x_test[:7])
    print(f"ONNX Runtime output for 7 images: shape {outputs.shape}")

    if args.float16:
        half_path = os.path.join(out_dir, "model_float16.onnx")
        half_blob = kc.convert.to_onnx(model, half_path, float16=True)
        print("\nONNX file (float16 inside, float32 inputs and outputs):")
        print(kc.convert.verify(model, half_blob, x_test, y_test))
        print(f"size: {len(half_blob) / len(blob):.2f}x the float32 file")
    print(f"\nwritten to {out_dir}")


if __name__ == "__main__":
    main()
