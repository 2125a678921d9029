"""Pruning on the reference workload: keras_compress and tfmot side by side.

The workload of `BENCHMARKS.md`, pruning variant, in one invocation:

1. Keras 3 baseline: the reference CNN on Fashion-MNIST (60k/10k), Adam(1e-3),
   batch 128, 3 epochs, seed `s`. Its weights are saved to a temporary `.npz`.
2. From those weights, in this process (Keras 3):
   a. plain fine-tune, 2 epochs Adam(1e-4): the timing reference and the
      dense float32 variant;
   b. keras_compress `prune_low_magnitude` with `PolynomialDecay(0 -> 0.8,
      begin 0, end at 70 % of the fine-tune steps, every 50 steps)`, same
      fine-tune, `strip_pruning`.
3. The same two fine-tunes with tfmot 0.8 on `tf_keras`, from the same weights,
   in a separate process (`_tfmot_pruning_worker.py`, `TF_USE_LEGACY_KERAS=1`).
4. Every LiteRT file (both tools) is measured here by the same code
   (`keras_compress.convert`): accuracy on the whole test set, raw and
   gzip -9 bytes, median latency of single-image invokes with one thread.

Prints one table per seed and the mean over seeds, with keras_compress/tfmot
ratios. Usage:

    python benchmarks/pruning_benchmark.py                 # seeds 0 and 1
    python benchmarks/pruning_benchmark.py --quick --seeds 0
    python benchmarks/pruning_benchmark.py --json out.json
"""

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_compress as kc  # noqa: E402

WORKER = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "_tfmot_pruning_worker.py"
)
TOOLS = ("keras_compress", "tfmot")
VARIANTS = (
    # (key, label, training run, file kind)
    ("dense", "dense float32", "plain", "float32"),
    ("pruned", "pruned 80%, float32 file", "pruned", "float32"),
    ("pruned_sparse", "pruned 80%, sparse file", "pruned", "sparse"),
)
PACKAGES = (
    "numpy",
    "tensorflow",
    "keras",
    "keras-compress",
    "ai-edge-litert",
    "tf-keras",
    "tensorflow-model-optimization",
)


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def build_model():
    """The reference CNN of BENCHMARKS.md (logits out)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
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
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _kernel_sparsity(model):
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / total


def _versions():
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def measure_file(content, x_test, y_test, latency_runs):
    """File accuracy, sizes and latency of one LiteRT flatbuffer."""
    outputs = kc.convert.run_tflite(content, x_test)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    num_bytes, gzip_bytes = kc.convert.file_sizes(content)
    latency = kc.convert.measure_latency(
        content, sample=x_test[:1], num_runs=latency_runs, num_threads=1
    )
    return {
        "file_acc": float(np.mean(np.argmax(outputs, axis=-1) == y_test)),
        "bytes": int(num_bytes),
        "gzip_bytes": int(gzip_bytes),
        "latency_s": float(latency),
    }


def run_keras_compress(cfg, seed, baseline_weights, data):
    """Plain and keras_compress pruning fine-tunes; returns runs and files."""
    (x_train, y_train), (x_test, y_test) = data
    fit_kwargs = {
        "batch_size": cfg["batch_size"],
        "epochs": cfg["finetune_epochs"],
        "verbose": 0,
    }
    # (a) plain fine-tune: the timing reference and the dense variant.
    keras.utils.set_random_seed(seed)
    plain = build_model()
    plain.set_weights(baseline_weights)
    _compile(plain, cfg["finetune_lr"])
    timer = EpochTimer()
    plain.fit(x_train, y_train, callbacks=[timer], **fit_kwargs)
    runs = {
        "plain": {
            "epoch_times": timer.times,
            "keras_acc": _accuracy(plain, x_test, y_test),
        }
    }
    files = {
        "plain": {
            "float32": kc.convert.to_tflite(plain, "float32", sparse=False)
        }
    }

    # (b) keras_compress pruning fine-tune from the same weights.
    keras.utils.set_random_seed(seed)
    start = build_model()
    start.set_weights(baseline_weights)
    schedule = kc.pruning.PolynomialDecay(
        0.0,
        cfg["final_sparsity"],
        begin_step=0,
        end_step=cfg["end_step"],
        frequency=cfg["frequency"],
    )
    pruned = kc.pruning.prune_low_magnitude(start, pruning_schedule=schedule)
    _compile(pruned, cfg["finetune_lr"])
    timer = EpochTimer()
    pruned.fit(
        x_train,
        y_train,
        callbacks=[kc.pruning.UpdatePruningStep(), timer],
        **fit_kwargs,
    )
    pruned_acc = _accuracy(pruned, x_test, y_test)
    stripped = kc.pruning.strip_pruning(pruned)
    runs["pruned"] = {
        "epoch_times": timer.times,
        "keras_acc": pruned_acc,
        "stripped_keras_acc": _accuracy(stripped, x_test, y_test),
        "kernel_sparsity": _kernel_sparsity(stripped),
    }
    files["pruned"] = {
        "float32": kc.convert.to_tflite(stripped, "float32", sparse=False),
        "sparse": kc.convert.to_tflite(stripped, "float32", sparse=True),
    }
    return runs, files


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
        "--final-sparsity",
        str(cfg["final_sparsity"]),
        "--end-step",
        str(cfg["end_step"]),
        "--frequency",
        str(cfg["frequency"]),
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
    for run in ("plain", "pruned"):
        files[run] = {}
        for kind, path in report[run].pop("files").items():
            with open(path, "rb") as f:
                files[run][kind] = f.read()
    return report, files


def run_seed(cfg, seed, data, keep_dir=None):
    (x_train, y_train), (x_test, y_test) = data
    print(
        f"\n== seed {seed}: Keras 3 baseline "
        f"({cfg['baseline_epochs']} epochs) ...",
        flush=True,
    )
    keras.utils.set_random_seed(seed)
    baseline = build_model()
    _compile(baseline, cfg["baseline_lr"])
    timer = EpochTimer()
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
            "keras_acc": _accuracy(baseline, x_test, y_test),
        }
    }
    with tempfile.TemporaryDirectory(prefix="kc_pruning_bench_") as work:
        weights_path = os.path.join(work, "baseline.npz")
        np.savez(
            weights_path,
            **{f"w{i:02d}": w for i, w in enumerate(baseline_weights)},
        )
        print(
            f"   keras_compress fine-tunes ({cfg['finetune_epochs']} "
            "epochs, plain and pruned) ...",
            flush=True,
        )
        runs = {}
        files = {}
        runs["keras_compress"], files["keras_compress"] = run_keras_compress(
            cfg, seed, baseline_weights, data
        )
        print(
            "   tfmot fine-tunes (tf_keras, separate process) ...", flush=True
        )
        tfmot_report, files["tfmot"] = run_tfmot(cfg, seed, weights_path, work)
        result["tfmot_baseline_keras_acc"] = tfmot_report.pop(
            "baseline_keras_acc"
        )
        result["tfmot_versions"] = tfmot_report.pop("versions")
        runs["tfmot"] = {
            "plain": tfmot_report["plain"],
            "pruned": tfmot_report["pruned"],
        }
    if keep_dir:
        os.makedirs(keep_dir, exist_ok=True)
        for tool, by_run in files.items():
            for run, by_kind in by_run.items():
                for kind, content in by_kind.items():
                    name = f"seed{seed}_{tool}_{run}_{kind}.tflite"
                    with open(os.path.join(keep_dir, name), "wb") as f:
                        f.write(content)

    print("   measuring LiteRT files ...", flush=True)
    result["runs"] = runs
    result["variants"] = {}
    for tool in TOOLS:
        plain_epoch = min(runs[tool]["plain"]["epoch_times"])
        rows = {}
        for key, _, run, kind in VARIANTS:
            info = runs[tool][run]
            row = measure_file(
                files[tool][run][kind], x_test, y_test, cfg["latency_runs"]
            )
            row["keras_acc"] = info["keras_acc"]
            row["epoch_s"] = min(info["epoch_times"])
            row["epoch_vs_plain"] = row["epoch_s"] / plain_epoch
            rows[key] = row
        for row in rows.values():
            row["gzip_vs_dense"] = (
                row["gzip_bytes"] / rows["dense"]["gzip_bytes"]
            )
        result["variants"][tool] = rows
    return result


def mean_variants(per_seed):
    """Mean of every figure over the seeds."""
    mean = {}
    for tool in TOOLS:
        mean[tool] = {}
        for key, *_ in VARIANTS:
            rows = [r["variants"][tool][key] for r in per_seed]
            mean[tool][key] = {
                name: float(np.mean([row[name] for row in rows]))
                for name in rows[0]
            }
    return mean


COLUMNS = (
    # (figure, header, format, how kc/tfmot compares: "ratio" or "diff")
    ("keras_acc", "keras acc", "{:.4f}", "diff"),
    ("file_acc", "file acc", "{:.4f}", "diff"),
    ("bytes", "bytes", "{:,.0f}", "ratio"),
    ("gzip_bytes", "gzip bytes", "{:,.0f}", "ratio"),
    ("gzip_vs_dense", "gzip/dense", "{:.3f}", "ratio"),
    ("latency_s", "latency us", None, "ratio"),
    ("epoch_s", "epoch s", "{:.2f}", "ratio"),
    ("epoch_vs_plain", "epoch/plain", "{:.3f}", "ratio"),
)


def _cell(name, fmt, value):
    if name == "latency_s":
        return f"{value * 1e6:.1f}"
    return fmt.format(value)


def format_table(variants):
    """One table: variant x tool, plus a keras_compress/tfmot row."""
    header = ["variant", "tool"] + [c[1] for c in COLUMNS]
    lines = []
    for key, label, *_ in VARIANTS:
        for tool in TOOLS:
            row = variants[tool][key]
            lines.append(
                [label, tool]
                + [_cell(name, fmt, row[name]) for name, _, fmt, _ in COLUMNS]
            )
        kc_row, tf_row = variants["keras_compress"][key], variants["tfmot"][key]
        compare = []
        for name, _, _, how in COLUMNS:
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


def make_config(args, num_train):
    quick = args.quick
    cfg = {
        "quick": quick,
        "max_train": 6000 if quick else None,
        "max_test": 1000 if quick else None,
        "data_seed": 0,
        "batch_size": 128,
        "baseline_epochs": 1 if quick else 3,
        "baseline_lr": 1e-3,
        "finetune_epochs": 1 if quick else 2,
        "finetune_lr": 1e-4,
        "final_sparsity": 0.8,
        "latency_runs": args.latency_runs,
    }
    if quick:
        num_train = min(num_train, cfg["max_train"])
    steps = math.ceil(num_train / cfg["batch_size"]) * cfg["finetune_epochs"]
    cfg["finetune_steps"] = steps
    cfg["end_step"] = int(0.7 * steps)
    # The recipe updates masks every 50 steps. A --quick run is too short for
    # that (tfmot would prune only at step 0, i.e. never): update ~8 times.
    cfg["frequency"] = (
        50 if cfg["end_step"] >= 200 else max(1, cfg["end_step"] // 8)
    )
    return cfg


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="training seeds (default: 0 1); the table "
        "reports each seed and the mean",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 6000 train / 1000 test images, 1 epoch per training",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write every figure to this JSON file",
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=300,
        help="single-image invokes per latency median",
    )
    parser.add_argument(
        "--keep-files",
        metavar="DIR",
        help="save every LiteRT file to this folder",
    )
    args = parser.parse_args(argv)
    # Each fine-tune builds a new model, so Keras traces a new predict
    # function each time; TF's "retracing" warning about that is noise here.
    tf.get_logger().setLevel("ERROR")

    wall_start = time.perf_counter()
    command = shlex.join([sys.executable] + sys.argv)
    versions = _versions()
    print(f"$ {command}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")

    name, train, test = kc.datasets.load_demo_data()
    if name != "fashion_mnist":
        print(
            f"warning: Fashion-MNIST not found, using '{name}'; the "
            "figures are not comparable with BENCHMARKS.md."
        )
    cfg = make_config(args, len(train[0]))
    if cfg["quick"]:
        name, train, test = kc.datasets.load_demo_data(
            max_train=cfg["max_train"],
            max_test=cfg["max_test"],
            seed=cfg["data_seed"],
        )
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(train[0]), len(test[0])
    print(
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} test; "
        f"baseline {cfg['baseline_epochs']} epochs Adam(1e-3); fine-tune "
        f"{cfg['finetune_epochs']} epochs Adam(1e-4), batch "
        f"{cfg['batch_size']}, {cfg['finetune_steps']} steps; "
        f"PolynomialDecay 0 -> {cfg['final_sparsity']}, end_step "
        f"{cfg['end_step']}, frequency {cfg['frequency']}; latency: median "
        f"of {cfg['latency_runs']} single-image invokes, 1 thread"
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
        runs = result["runs"]
        print(
            f"\n-- seed {seed}: baseline Keras acc "
            f"{result['baseline']['keras_acc']:.4f} (tf_keras with the same "
            f"weights: {result['tfmot_baseline_keras_acc']:.4f}); kernel "
            "sparsity after strip: keras_compress "
            f"{runs['keras_compress']['pruned']['kernel_sparsity']:.4f}, "
            f"tfmot {runs['tfmot']['pruned']['kernel_sparsity']:.4f}"
        )
        if (
            abs(
                result["baseline"]["keras_acc"]
                - result["tfmot_baseline_keras_acc"]
            )
            > 0.002
        ):
            print(
                "warning: the tf_keras copy of the baseline does not "
                "reproduce its accuracy; check the weight transfer."
            )
        print(format_table(result["variants"]))

    mean = mean_variants(per_seed)
    if len(per_seed) > 1:
        print(f"\n== mean over seeds {args.seeds}")
        print(format_table(mean))
    elapsed = time.perf_counter() - wall_start
    print(
        "\nepoch s: best epoch of each fine-tune; epoch/plain: against the "
        "same tool's plain fine-tune in the same run. kc/tfmot: ratio "
        "keras_compress / tfmot (accuracies: difference)."
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
