"""Below 8 bits on the reference workload: keras_compress and ai-edge-quantizer.

The workload of `BENCHMARKS.md`, in one invocation:

1. Keras 3 baseline: the reference CNN on Fashion-MNIST (60k/10k),
   Adam(1e-3), batch 128, 3 epochs, seed `s`.
2. The baseline converted every way, calibration on the first 200
   training images:
   - keras_compress: `to_tflite` float32, int8 PTQ, and
     `to_tflite(precision=...)`: w4a8 (int4 weights, int8 activations),
     weight-only w4 with each weight-rounding algorithm (min_max, mse,
     gptq), and a mixed map (int4 convolutions, 2-bit dynamic-range for
     the 1600x128 Dense that holds 91 % of the weights);
   - the hand-written recipe of the issue: magnitude pruning to 80 %
     (PolynomialDecay, 2 fine-tune epochs at 1e-4) + w4a8;
   - anchor: Google's ai-edge-quantizer used directly on keras_compress's
     float32 file, as its README shows: the stock `dynamic_wi4_afp32` and
     `weight_only_wi4_afp32` recipes, and a static W4A8 recipe calibrated
     one image at a time (its documented calibration format).
3. Every file is measured by the same code: accuracy on the whole test
   set, raw and gzip -9 bytes, median single-thread latency (LiteRT
   interpreter), and what its weight tensors hold (read from the file).

Usage:

    python benchmarks/low_bit_benchmark.py            # full workload
    python benchmarks/low_bit_benchmark.py --quick    # smoke test
"""

import contextlib
import io
import os
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402

PACKAGES = _common.PACKAGES + ("ai-edge-quantizer",)
NUM_CALIBRATION = 200


def _ours(model, calibration, mode="int8", **kwargs):
    data = calibration if mode != "float32" or "algorithm" in kwargs else None
    return kc.convert.to_tflite(
        model, mode, representative_data=data, verbose=0, **kwargs
    )


def _anchor(float_content, calibration, build):
    """ai-edge-quantizer on a float file, the way its README uses it."""
    from ai_edge_quantizer import quantizer

    job = quantizer.Quantizer(bytearray(float_content))
    build(job)
    result = None
    if job.need_calibration:
        interpreter = kc.convert.interpreter._make_interpreter(float_content)
        [signature] = interpreter.get_signature_list()
        [name] = interpreter.get_signature_list()[signature]["inputs"]
        samples = [
            {name: calibration[i : i + 1]} for i in range(len(calibration))
        ]
        with contextlib.redirect_stderr(io.StringIO()):  # progress bar
            result = job.calibrate({signature: samples})
    return bytes(
        job.quantize(result, enable_progress_report=False).quantized_model
    )


def variants(model, pruned, calibration):
    """(key, label, bytes) of every file."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer import recipe

    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    dense = [layer.name for layer in model.layers if layer.weights]
    convolutions, big_dense = dense[:2], dense[2]
    float_content = _ours(model, None, "float32")
    mixed = {name: "w4a8" for name in convolutions}
    mixed[big_dense] = "w2-dynamic"

    def static_w4a8(job):
        job.add_static_config(".*", every_op, 8, 8)
        job.add_static_config(".*", every_op, 8, 4)

    def stock(build):
        return lambda job: job.load_quantization_recipe(build())

    return [
        ("float32", "float32", float_content),
        ("int8", "int8 PTQ", _ours(model, calibration)),
        ("w4a8", "w4a8", _ours(model, calibration, precision="w4a8")),
        (
            "w4",
            "w4 weight-only",
            _ours(model, calibration, "float32", precision="w4"),
        ),
        (
            "w4_mse",
            "w4 weight-only, mse",
            _ours(
                model, calibration, "float32", precision="w4", algorithm="mse"
            ),
        ),
        (
            "w4_gptq",
            "w4 weight-only, gptq",
            _ours(
                model, calibration, "float32", precision="w4", algorithm="gptq"
            ),
        ),
        (
            "mixed",
            "w4a8 convs + w2-dynamic dense",
            _ours(model, calibration, precision=mixed),
        ),
        (
            "pruned_w4a8",
            "80 % pruned + w4a8",
            _ours(pruned, calibration, precision="w4a8"),
        ),
        (
            "aeq_dynamic_wi4",
            "AEQ dynamic_wi4_afp32",
            _anchor(
                float_content, calibration, stock(recipe.dynamic_wi4_afp32)
            ),
        ),
        (
            "aeq_weight_only_wi4",
            "AEQ weight_only_wi4_afp32",
            _anchor(
                float_content, calibration, stock(recipe.weight_only_wi4_afp32)
            ),
        ),
        (
            "aeq_static_w4a8",
            "AEQ static W4A8, per-image calib",
            _anchor(float_content, calibration, static_w4a8),
        ),
    ]


def _pruned(cfg, seed, weights, data):
    steps = cfg["finetune_epochs"] * int(
        np.ceil(len(data[0][0]) / cfg["batch_size"])
    )
    schedule = kc.pruning.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=max(1, steps - 50), frequency=50
    )
    pruned, figures = _common.fine_tune(
        keras,
        cfg,
        seed,
        weights,
        data,
        wrap=lambda m: kc.pruning.prune_low_magnitude(
            m, pruning_schedule=schedule
        ),
        callbacks=[kc.pruning.UpdatePruningStep()],
    )
    return kc.pruning.strip_pruning(pruned), figures


def main(argv=None):
    # The quantizer's calibrating interpreter keeps every tensor on purpose.
    warnings.filterwarnings(
        "ignore", message=".*experimental_preserve_all_tensors"
    )
    parser = _common.benchmark_parser(__doc__)
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (default 0)"
    )
    _common.add_arguments(parser, "quick", "latency_runs", "json")
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(PACKAGES)
    cfg = _common.finetune_config(args.quick)
    cfg.update(seed=args.seed, latency_runs=args.latency_runs)
    name, train, test = _common.load_data(
        max_train=cfg["max_train"], max_test=cfg["max_test"], seed=0
    )
    data = (train, test)
    x_test, y_test = test
    weights, baseline = _common.train_baseline(keras, cfg, args.seed, data)
    model = _common.build_model(keras)
    model.set_weights(weights)
    pruned, pruned_run = _pruned(cfg, args.seed, weights, data)
    calibration = train[0][:NUM_CALIBRATION]

    rows = {}
    for key, label, content in variants(model, pruned, calibration):
        row = _common.measure_file(content, x_test, y_test, cfg["latency_runs"])
        row["label"] = label
        row["weights"] = kc.convert.flatbuffer.describe(
            kc.convert.weight_tensors(content)
        )
        rows[key] = row
    base = rows["float32"]
    print(
        f"\nreference CNN, {name}: Keras accuracy {baseline['keras_acc']:.4f}"
        f"; pruned (80 %) fine-tune {pruned_run['keras_acc']:.4f}"
    )
    header = (
        f"{'file':34} {'acc':>7} {'drop':>6} {'bytes':>9} {'x f32':>6} "
        f"{'gzip x':>6} {'lat us':>7} {'x f32':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in rows.values():
        row["bytes_ratio"] = row["bytes"] / base["bytes"]
        row["gzip_ratio"] = row["gzip_bytes"] / base["bytes"]
        row["latency_ratio"] = row["latency_s"] / base["latency_s"]
        row["drop"] = base["file_acc"] - row["file_acc"]
        print(
            f"{row['label']:34} {row['file_acc']:7.4f} {row['drop']:+6.4f} "
            f"{row['bytes']:9,} {row['bytes_ratio']:6.3f} "
            f"{row['gzip_ratio']:6.3f} {row['latency_s'] * 1e6:7.1f} "
            f"{row['latency_ratio']:5.2f}"
        )
    print("\nweights stored per file:")
    for row in rows.values():
        print(f"  {row['label']:34} {row['weights']}")
    goal = rows["pruned_w4a8"]
    print(
        "\ngoal (80 % pruned + w4a8): raw <= 0.12x "
        f"{'met' if goal['bytes_ratio'] <= 0.12 else 'MISSED'} "
        f"({goal['bytes_ratio']:.3f}x), gzip <= 0.03x "
        f"{'met' if goal['gzip_ratio'] <= 0.03 else 'MISSED'} "
        f"({goal['gzip_ratio']:.3f}x), within 1 point of float "
        f"{'met' if goal['drop'] <= 0.01 else 'MISSED'} ({goal['drop']:+.4f})"
    )
    bench.finish(args.json, cfg, baseline=baseline, rows=rows)


if __name__ == "__main__":
    main()
