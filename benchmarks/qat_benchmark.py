"""Quantization-aware training on the reference workload, vs tfmot.

The workload of `BENCHMARKS.md`, QAT variant, in one invocation:

1. Keras 3 baseline: the reference CNN on Fashion-MNIST (60k/10k), Adam(1e-3),
   batch 128, 3 epochs, seed `s`. Its weights go to a temporary `.npz`.
2. From those weights, in this process (Keras 3):
   a. plain fine-tune, 2 epochs Adam(1e-4): the timing reference and the
      float32 file;
   b. `kc.quantization.quantize_model` (default 8-bit scheme), the same
      fine-tune, then `kc.convert.to_tflite(qat, "int8")`: the int8 file,
      from the fake-quant ranges (no calibration data);
   c. for reference, post-training int8 of the plain model (200 calibration
      images, `to_tflite(..., "int8", representative_data=...)`).
3. The same plain and QAT fine-tunes with tfmot 0.8 on `tf_keras`, from the
   same weights, in a separate process (`_tfmot_qat_worker.py`).
4. Every LiteRT file is measured here by the same code (`kc.convert`):
   accuracy on the whole test set, raw and gzip -9 bytes, median latency of
   single-image invokes with one thread.

Prints one table per seed and the mean over seeds, the keras_compress/tfmot
ratios, and the goals of issue #4. Usage:

    python benchmarks/qat_benchmark.py                  # seeds 0 and 1
    python benchmarks/qat_benchmark.py --quick --seeds 0
    python benchmarks/qat_benchmark.py --json out.json
"""

import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress import quantization  # noqa: E402

WORKER = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "_tfmot_qat_worker.py"
)
TOOLS = ("keras_compress", "tfmot")
VARIANTS = (
    # (key, label, training run)
    ("float32", "float32", "plain"),
    ("qat", "QAT int8", "qat"),
)
NUM_CALIBRATION = 200
PACKAGES = _common.PACKAGES + _common.TFMOT_PACKAGES


def convert_qat(model):
    """The int8 file of a QAT model, from its fake-quant ranges."""
    try:
        return kc.convert.to_tflite(model, "int8")
    except ValueError as error:
        if "representative_data" not in str(error):
            raise
    # An older `to_tflite` that always asks for calibration data: convert
    # the exported model directly, as it would (same converter settings).
    with tempfile.TemporaryDirectory(prefix="kc_qat_") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def run_keras_compress(cfg, seed, baseline_weights, data):
    """Plain, QAT and PTQ with keras_compress; returns runs and files."""
    (x_train, _), _ = data
    runs = {}
    plain, runs["plain"] = _common.fine_tune(
        keras, cfg, seed, baseline_weights, data
    )
    files = {"plain": kc.convert.to_tflite(plain, "float32", sparse=False)}
    ptq = kc.convert.to_tflite(
        plain, "int8", representative_data=x_train[:NUM_CALIBRATION]
    )

    qat, runs["qat"] = _common.fine_tune(
        keras,
        cfg,
        seed,
        baseline_weights,
        data,
        wrap=quantization.quantize_model,
    )
    files["qat"] = convert_qat(qat)
    return runs, files, ptq


def run_tfmot(cfg, seed, weights_path, work_dir):
    """Runs the tfmot worker in its own process; returns runs and files."""
    report = _common.run_tfmot_worker(WORKER, cfg, seed, weights_path, work_dir)
    files = {}
    for run in ("plain", "qat"):
        with open(report[run].pop("file"), "rb") as f:
            files[run] = f.read()
    return report, files


def run_seed(cfg, seed, data, keep_dir=None):
    _, (x_test, y_test) = data
    baseline_weights, baseline = _common.train_baseline(keras, cfg, seed, data)
    result = {"baseline": baseline}
    runs, files = {}, {}
    with tempfile.TemporaryDirectory(prefix="kc_qat_bench_") as work:
        weights_path = os.path.join(work, "baseline.npz")
        _common.save_weights(weights_path, baseline_weights)
        print(
            f"   keras_compress fine-tunes ({cfg['finetune_epochs']} epochs, "
            "plain and QAT) ...",
            flush=True,
        )
        runs["keras_compress"], files["keras_compress"], ptq = (
            run_keras_compress(cfg, seed, baseline_weights, data)
        )
        print(
            "   tfmot fine-tunes (tf_keras, separate process) ...", flush=True
        )
        report, files["tfmot"] = run_tfmot(cfg, seed, weights_path, work)
        result["tfmot_baseline_keras_acc"] = report["baseline_keras_acc"]
        result["tfmot_versions"] = report["versions"]
        runs["tfmot"] = {"plain": report["plain"], "qat": report["qat"]}
    if keep_dir:
        named = {"keras_compress_ptq": ptq}
        for tool, by_run in files.items():
            for run, content in by_run.items():
                named[f"{tool}_{run}"] = content
        for name, content in named.items():
            _common.write_file(keep_dir, f"seed{seed}_{name}.tflite", content)

    print("   measuring LiteRT files ...", flush=True)
    result["runs"] = runs
    result["variants"] = {}
    for tool in TOOLS:
        rows = {}
        for key, _, run in VARIANTS:
            rows[key] = _common.measure_run_file(
                files[tool][run],
                runs[tool][run],
                runs[tool]["plain"],
                x_test,
                y_test,
                cfg["latency_runs"],
            )
        for row in rows.values():
            row["bytes_vs_float"] = row["bytes"] / rows["float32"]["bytes"]
            row["latency_vs_float"] = (
                row["latency_s"] / rows["float32"]["latency_s"]
            )
        result["variants"][tool] = rows
    result["ptq"] = _common.measure_file(
        ptq, x_test, y_test, cfg["latency_runs"]
    )
    return result


def mean_over(per_seed):
    """Mean of every figure over the seeds."""
    return {
        "variants": _common.mean_variants(
            per_seed, TOOLS, [key for key, *_ in VARIANTS]
        ),
        "ptq": _common.mean_rows([r["ptq"] for r in per_seed]),
    }


COLUMNS = _common.tool_columns(
    "keras_acc",
    "file_acc",
    "bytes",
    "gzip_bytes",
    ("bytes_vs_float", "bytes/f32", "{:.3f}", "ratio"),
    "latency_s",
    ("latency_vs_float", "lat/f32", "{:.3f}", "ratio"),
    "epoch_s",
    "epoch_vs_plain",
)


def format_table(variants):
    """One table: variant x tool, plus a keras_compress/tfmot row."""
    return _common.format_tool_table(
        variants,
        [(key, label) for key, label, _ in VARIANTS],
        COLUMNS,
        TOOLS,
        "kc/tfmot",
    )


def format_ptq(ptq, variants):
    float_row = variants["keras_compress"]["float32"]
    return (
        f"reference, keras_compress PTQ int8 ({NUM_CALIBRATION} calibration "
        f"images, no fine-tune): file acc {ptq['file_acc']:.4f}, "
        f"{ptq['bytes']:,} bytes ({ptq['bytes'] / float_row['bytes']:.3f}x "
        f"f32), {ptq['latency_s'] * 1e6:.1f} us "
        f"({ptq['latency_s'] / float_row['latency_s']:.3f}x f32)"
    )


def check_goals(variants):
    """The targets of issue #4, for keras_compress's QAT int8 file."""
    kc_rows, tf_rows = variants["keras_compress"], variants["tfmot"]
    qat, float32 = kc_rows["qat"], kc_rows["float32"]
    goals = [
        (
            "int8 file acc >= float32 - 0.3 points",
            qat["file_acc"] >= float32["file_acc"] - 0.003,
            f"{qat['file_acc']:.4f} vs {float32['file_acc']:.4f}",
        ),
        (
            "int8 file acc >= tfmot QAT",
            qat["file_acc"] >= tf_rows["qat"]["file_acc"],
            f"{qat['file_acc']:.4f} vs {tf_rows['qat']['file_acc']:.4f}",
        ),
        (
            "QAT epoch <= 1.25x plain",
            qat["epoch_vs_plain"] <= 1.25,
            f"{qat['epoch_vs_plain']:.3f}x (tfmot "
            f"{tf_rows['qat']['epoch_vs_plain']:.3f}x)",
        ),
        (
            "int8 bytes <= 0.26x float32",
            qat["bytes_vs_float"] <= 0.26,
            f"{qat['bytes_vs_float']:.3f}x (tfmot "
            f"{tf_rows['qat']['bytes_vs_float']:.3f}x)",
        ),
        (
            "latency <= 0.45x float32",
            qat["latency_vs_float"] <= 0.45,
            f"{qat['latency_vs_float']:.3f}x (tfmot "
            f"{tf_rows['qat']['latency_vs_float']:.3f}x)",
        ),
    ]
    return "\n".join(
        f"  [{'met' if ok else 'MISSED'}] {name}: {detail}"
        for name, ok, detail in goals
    )


def make_config(args):
    cfg = _common.finetune_config(args.quick)
    cfg["latency_runs"] = args.latency_runs
    return cfg


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(
        parser,
        "seeds",
        "quick",
        "json",
        "latency_runs",
        "keep_files",
        seeds="training seeds (default: 0 1); one table per seed and the mean",
        quick="smoke test: 6000 train / 1000 test images, 1 epoch per training",
        json="write every figure",
        keep_files="save every LiteRT file here",
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(PACKAGES)

    cfg = make_config(args)
    name, train, test = _common.load_data(
        cfg["max_train"], cfg["max_test"], cfg["data_seed"]
    )
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(train[0]), len(test[0])
    print(
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} test; "
        f"baseline {cfg['baseline_epochs']} epochs Adam(1e-3); fine-tunes "
        f"{cfg['finetune_epochs']} epochs Adam(1e-4), batch "
        f"{cfg['batch_size']}; QAT: default 8-bit schemes of both tools; "
        f"latency: median of {cfg['latency_runs']} single-image invokes, "
        "1 thread"
    )

    per_seed = []
    for seed in args.seeds:
        result = run_seed(cfg, seed, (train, test), args.keep_files)
        result["seed"] = seed
        per_seed.append(result)
        bench.add_worker_versions(result.pop("tfmot_versions"))
        print(
            f"\n-- seed {seed}: baseline Keras acc "
            f"{result['baseline']['keras_acc']:.4f} (tf_keras with the same "
            f"weights: {result['tfmot_baseline_keras_acc']:.4f})"
        )
        print(format_table(result["variants"]))
        print(format_ptq(result["ptq"], result["variants"]))

    mean = mean_over(per_seed)
    if len(per_seed) > 1:
        print(f"\n== mean over seeds {args.seeds}")
        print(format_table(mean["variants"]))
        print(format_ptq(mean["ptq"], mean["variants"]))
    print("\nissue #4 goals (keras_compress QAT int8 file, mean over seeds):")
    print(check_goals(mean["variants"]))
    print(
        "\nepoch s: best epoch of each fine-tune; epoch/plain, bytes/f32, "
        "lat/f32: against the same tool's plain fine-tune and float32 file "
        "in the same run. kc/tfmot: ratio keras_compress / tfmot "
        "(accuracies: difference)."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
