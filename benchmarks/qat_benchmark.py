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

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pruning_benchmark as shared  # noqa: E402
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
    (x_train, y_train), (x_test, y_test) = data
    fit_kwargs = {
        "batch_size": cfg["batch_size"],
        "epochs": cfg["finetune_epochs"],
        "verbose": 0,
    }
    keras.utils.set_random_seed(seed)
    plain = shared.build_model()
    plain.set_weights(baseline_weights)
    shared._compile(plain, cfg["finetune_lr"])
    timer = shared.EpochTimer()
    plain.fit(x_train, y_train, callbacks=[timer], **fit_kwargs)
    runs = {
        "plain": {
            "epoch_times": timer.times,
            "keras_acc": shared._accuracy(plain, x_test, y_test),
        }
    }
    files = {"plain": kc.convert.to_tflite(plain, "float32", sparse=False)}
    ptq = kc.convert.to_tflite(
        plain, "int8", representative_data=x_train[:NUM_CALIBRATION]
    )

    keras.utils.set_random_seed(seed)
    start = shared.build_model()
    start.set_weights(baseline_weights)
    qat = quantization.quantize_model(start)
    shared._compile(qat, cfg["finetune_lr"])
    timer = shared.EpochTimer()
    qat.fit(x_train, y_train, callbacks=[timer], **fit_kwargs)
    runs["qat"] = {
        "epoch_times": timer.times,
        "keras_acc": shared._accuracy(qat, x_test, y_test),
    }
    files["qat"] = convert_qat(qat)
    return runs, files, ptq


def run_tfmot(cfg, seed, weights_path, work_dir):
    """Runs the tfmot worker in its own process; returns runs and files."""
    command = [
        sys.executable,
        WORKER,
        "--weights",
        weights_path,
        "--datasets-py",
        kc.datasets.__file__,
        "--out-dir",
        work_dir,
        "--seed",
        str(seed),
        "--data-seed",
        str(cfg["data_seed"]),
        "--epochs",
        str(cfg["finetune_epochs"]),
        "--batch-size",
        str(cfg["batch_size"]),
        "--learning-rate",
        str(cfg["finetune_lr"]),
    ]
    if cfg["max_train"] is not None:
        command += ["--max-train", str(cfg["max_train"])]
    if cfg["max_test"] is not None:
        command += ["--max-test", str(cfg["max_test"])]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"The tfmot worker failed (exit {result.returncode}). Is "
            "`pip install -e .[bench,litert]` done? Command:\n"
            f"{shlex.join(command)}\n--- stderr (tail) ---\n"
            f"{result.stderr[-4000:]}"
        )
    with open(os.path.join(work_dir, "tfmot_report.json")) as f:
        report = json.load(f)
    files = {}
    for run in ("plain", "qat"):
        with open(report[run].pop("file"), "rb") as f:
            files[run] = f.read()
    return report, files


def run_seed(cfg, seed, data, keep_dir=None):
    (x_train, y_train), (x_test, y_test) = data
    print(
        f"\n== seed {seed}: Keras 3 baseline "
        f"({cfg['baseline_epochs']} epochs) ...",
        flush=True,
    )
    keras.utils.set_random_seed(seed)
    baseline = shared.build_model()
    shared._compile(baseline, cfg["baseline_lr"])
    timer = shared.EpochTimer()
    baseline.fit(
        x_train,
        y_train,
        batch_size=cfg["batch_size"],
        epochs=cfg["baseline_epochs"],
        callbacks=[timer],
        verbose=0,
    )
    baseline_weights = baseline.get_weights()
    result = {
        "baseline": {
            "epoch_times": timer.times,
            "keras_acc": shared._accuracy(baseline, x_test, y_test),
        }
    }
    runs, files = {}, {}
    with tempfile.TemporaryDirectory(prefix="kc_qat_bench_") as work:
        weights_path = os.path.join(work, "baseline.npz")
        np.savez(
            weights_path,
            **{f"w{i:02d}": w for i, w in enumerate(baseline_weights)},
        )
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
        os.makedirs(keep_dir, exist_ok=True)
        named = {"keras_compress_ptq": ptq}
        for tool, by_run in files.items():
            for run, content in by_run.items():
                named[f"{tool}_{run}"] = content
        for name, content in named.items():
            path = os.path.join(keep_dir, f"seed{seed}_{name}.tflite")
            with open(path, "wb") as f:
                f.write(content)

    print("   measuring LiteRT files ...", flush=True)
    result["runs"] = runs
    result["variants"] = {}
    for tool in TOOLS:
        plain_epoch = min(runs[tool]["plain"]["epoch_times"])
        rows = {}
        for key, _, run in VARIANTS:
            row = shared.measure_file(
                files[tool][run], x_test, y_test, cfg["latency_runs"]
            )
            row["keras_acc"] = runs[tool][run]["keras_acc"]
            row["epoch_s"] = min(runs[tool][run]["epoch_times"])
            row["epoch_vs_plain"] = row["epoch_s"] / plain_epoch
            rows[key] = row
        for row in rows.values():
            row["bytes_vs_float"] = row["bytes"] / rows["float32"]["bytes"]
            row["latency_vs_float"] = (
                row["latency_s"] / rows["float32"]["latency_s"]
            )
        result["variants"][tool] = rows
    result["ptq"] = shared.measure_file(
        ptq, x_test, y_test, cfg["latency_runs"]
    )
    return result


def mean_over(per_seed):
    """Mean of every figure over the seeds."""
    mean = {"variants": {}, "ptq": {}}
    for tool in TOOLS:
        mean["variants"][tool] = {}
        for key, *_ in VARIANTS:
            rows = [r["variants"][tool][key] for r in per_seed]
            mean["variants"][tool][key] = {
                name: float(np.mean([row[name] for row in rows]))
                for name in rows[0]
            }
    for name in per_seed[0]["ptq"]:
        mean["ptq"][name] = float(np.mean([r["ptq"][name] for r in per_seed]))
    return mean


COLUMNS = (
    # (figure, header, how kc/tfmot compares: "ratio" or "diff")
    ("keras_acc", "keras acc", "diff"),
    ("file_acc", "file acc", "diff"),
    ("bytes", "bytes", "ratio"),
    ("gzip_bytes", "gzip bytes", "ratio"),
    ("bytes_vs_float", "bytes/f32", "ratio"),
    ("latency_s", "latency us", "ratio"),
    ("latency_vs_float", "lat/f32", "ratio"),
    ("epoch_s", "epoch s", "ratio"),
    ("epoch_vs_plain", "epoch/plain", "ratio"),
)
_FORMATS = {
    "keras_acc": "{:.4f}",
    "file_acc": "{:.4f}",
    "bytes": "{:,.0f}",
    "gzip_bytes": "{:,.0f}",
    "bytes_vs_float": "{:.3f}",
    "latency_vs_float": "{:.3f}",
    "epoch_s": "{:.2f}",
    "epoch_vs_plain": "{:.3f}",
}


def _cell(name, value):
    if name == "latency_s":
        return f"{value * 1e6:.1f}"
    return _FORMATS[name].format(value)


def format_table(variants):
    """One table: variant x tool, plus a keras_compress/tfmot row."""
    header = ["variant", "tool"] + [c[1] for c in COLUMNS]
    lines = []
    for key, label, _ in VARIANTS:
        for tool in TOOLS:
            row = variants[tool][key]
            lines.append(
                [label, tool] + [_cell(name, row[name]) for name, *_ in COLUMNS]
            )
        kc_row, tf_row = variants["keras_compress"][key], variants["tfmot"][key]
        compare = []
        for name, _, how in COLUMNS:
            if how == "diff":
                compare.append(f"{kc_row[name] - tf_row[name]:+.4f}")
            elif tf_row[name]:
                compare.append(f"{kc_row[name] / tf_row[name]:.2f}x")
            else:
                compare.append("-")
        lines.append([label, "kc/tfmot"] + compare)
    widths = [
        max(len(str(x)) for x in column) for column in zip(header, *lines)
    ]

    def fmt_line(cells):
        out = [f"{cells[0]:<{widths[0]}}", f"{cells[1]:<{widths[1]}}"]
        out += [f"{c:>{w}}" for c, w in zip(cells[2:], widths[2:])]
        return " | ".join(out)

    rule = "-+-".join("-" * w for w in widths)
    text = [fmt_line(header), rule]
    for i, line in enumerate(lines):
        text.append(fmt_line(line))
        if i % 3 == 2 and i != len(lines) - 1:
            text.append(rule)
    return "\n".join(text)


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
    quick = args.quick
    return {
        "quick": quick,
        "max_train": 6000 if quick else None,
        "max_test": 1000 if quick else None,
        "data_seed": 0,
        "batch_size": 128,
        "baseline_epochs": 1 if quick else 3,
        "baseline_lr": 1e-3,
        "finetune_epochs": 1 if quick else 2,
        "finetune_lr": 1e-4,
        "latency_runs": args.latency_runs,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="training seeds (default: 0 1); one table per seed and the mean",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 6000 train / 1000 test images, 1 epoch per training",
    )
    parser.add_argument("--json", metavar="PATH", help="write every figure")
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=300,
        help="single-image invokes per latency median",
    )
    parser.add_argument(
        "--keep-files", metavar="DIR", help="save every LiteRT file here"
    )
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")

    wall_start = time.perf_counter()
    command = shlex.join([sys.executable] + sys.argv)
    versions = shared._versions()
    print(f"$ {command}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")

    cfg = make_config(args)
    name, train, test = kc.datasets.load_demo_data(
        max_train=cfg["max_train"],
        max_test=cfg["max_test"],
        seed=cfg["data_seed"],
    )
    if name != "fashion_mnist":
        print(
            f"warning: Fashion-MNIST not found, using '{name}'; the "
            "figures are not comparable with BENCHMARKS.md."
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
        versions.update(
            {
                k.replace("_", "-"): v
                for k, v in result.pop("tfmot_versions").items()
            }
        )
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
    elapsed = time.perf_counter() - wall_start
    print(
        "\nepoch s: best epoch of each fine-tune; epoch/plain, bytes/f32, "
        "lat/f32: against the same tool's plain fine-tune and float32 file "
        "in the same run. kc/tfmot: ratio keras_compress / tfmot "
        "(accuracies: difference)."
    )
    print(f"total wall time: {elapsed:.0f} s")
    if args.json:
        report = {
            "command": command,
            "versions": versions,
            "config": cfg,
            "per_seed": per_seed,
            "mean": mean,
            "wall_time_s": elapsed,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
