"""Plumbing shared by the benchmark scripts and their tfmot workers.

Every benchmark trains on the reference workload of `BENCHMARKS.md`, prints
the same header (command, versions, machine, data), times epochs the same
way, prints tables of the same layout and writes the same JSON report; the
pruning and QAT benchmarks also run a tfmot worker in a separate process.
That code lives here once, so that the scripts differ only in what they
compare and the figures of different scripts stay comparable.

The tfmot workers (`_tfmot_*_worker.py`) import this module too, in a
process with `TF_USE_LEGACY_KERAS=1` that must never import Keras 3. So the
top of this module imports only the standard library and numpy: helpers that
build or train models take the Keras module to use (`keras` in the
benchmarks, `tf_keras` in the workers) as their first argument, and the few
that need keras_compress import it when called (main processes only).

Scripts run as `python benchmarks/X.py` have this folder on `sys.path`, so
they import it by name: `import _common`.
"""

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time

import numpy as np

# The file a tfmot worker writes its figures to, in its `--out-dir`.
WORKER_REPORT = "tfmot_report.json"
# Packages whose versions a run reports: those of every LiteRT benchmark,
# and those of the tfmot worker's side.
PACKAGES = ("numpy", "tensorflow", "keras", "keras-compress", "ai-edge-litert")
TFMOT_PACKAGES = ("tf-keras", "tensorflow-model-optimization")

# --- Command line, header, data and report of a benchmark run ---------------

# The options several benchmarks share, with their most common help text;
# `add_arguments` takes a script's own wording where it differs.
_ARGUMENTS = {
    "seeds": (
        "--seeds",
        {"type": int, "nargs": "+", "default": [0, 1]},
        "training seeds (default: 0 1); tables per seed and the mean",
    ),
    "quick": (
        "--quick",
        {"action": "store_true"},
        "smoke test: 6000 train / 1000 test images, 1 epoch",
    ),
    "json": (
        "--json",
        {"metavar": "PATH"},
        "also write every figure to this JSON file",
    ),
    "latency_runs": (
        "--latency-runs",
        {"type": int, "default": 300},
        "single-image invokes per latency median",
    ),
    "keep_files": (
        "--keep-files",
        {"metavar": "DIR"},
        "save every LiteRT file to this folder",
    ),
    "validation": (
        "--validation",
        {"action": "store_true"},
        "train on the first 50,000 training images and measure on the last "
        "10,000 instead of the test set (for choosing the options; see "
        "hold_out)",
    ),
}


def benchmark_parser(description):
    """The argument parser of a benchmark: its docstring as description."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )


def add_arguments(parser, *names, **helps):
    """Adds the shared options `names` (e.g. `"seeds"`, `"json"`), in order.

    `helps` maps a name to the script's own help text for it.
    """
    for name in names:
        flag, kwargs, default_help = _ARGUMENTS[name]
        parser.add_argument(flag, help=helps.get(name, default_help), **kwargs)


def versions(packages):
    """Python's version and each package's, in order (`"not installed"`)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class BenchmarkRun:
    """One invocation of a benchmark: its header, wall time and report.

    Created once the arguments are parsed: prints the command, the versions
    and the machine (a figure means little without the stack and machine
    it ran on); `finish` prints the wall time and writes the JSON report.
    """

    def __init__(self, packages, machine_note=""):
        import tensorflow as tf  # Keras 3 side: main processes only

        # Each training builds new models, so Keras traces new functions
        # each time; TF's "retracing" warning about that is noise here.
        tf.get_logger().setLevel("ERROR")
        self.wall_start = time.perf_counter()
        self.command = shlex.join([sys.executable] + sys.argv)
        self.versions = versions(packages)
        print(f"$ {self.command}")
        print(
            "versions: "
            + ", ".join(f"{k} {v}" for k, v in self.versions.items())
        )
        print(
            f"machine: {platform.platform()}, {os.cpu_count()} CPUs"
            + machine_note
        )

    def add_worker_versions(self, worker_versions):
        """Adds a tfmot worker's versions (`tf_keras` as `tf-keras`)."""
        self.versions.update(
            {k.replace("_", "-"): v for k, v in worker_versions.items()}
        )

    def finish(self, json_path, config, **results):
        """Prints the wall time; writes the report if `json_path` is set.

        Every report has the same frame, `command`, `versions`, `config`,
        the script's `results` in order, then `wall_time_s`, so that the
        reports of different scripts and runs read alike.
        """
        elapsed = time.perf_counter() - self.wall_start
        print(f"total wall time: {elapsed:.0f} s")
        if not json_path:
            return
        report = {
            "command": self.command,
            "versions": self.versions,
            "config": config,
        }
        report.update(results)
        report["wall_time_s"] = elapsed
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {json_path}")


def load_data(max_train=None, max_test=None, seed=0):
    """`kc.datasets.load_demo_data`; warns if Fashion-MNIST is missing.

    Without Fashion-MNIST the loader falls back to other data; the run still
    works (a smoke test), but its figures must not be read as the reference.
    """
    from keras_compress import datasets  # Keras 3: main processes only

    name, train, test = datasets.load_demo_data(
        max_train=max_train, max_test=max_test, seed=seed
    )
    if name != "fashion_mnist":
        print(
            f"warning: Fashion-MNIST not found, using '{name}'; the "
            "figures are not comparable with BENCHMARKS.md."
        )
    return name, train, test


def hold_out(train, quick):
    """`(train, validation)`: the end of the training set held out.

    For `--validation` runs, which choose a benchmark's options without
    looking at the test set: 10,000 images (1,000 with `--quick`).
    """
    (x, y), size = train, 1_000 if quick else 10_000
    return (x[:-size], y[:-size]), (x[-size:], y[-size:])


def write_file(folder, name, content):
    """Writes `content` (bytes) to `folder/name`; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(content)
    return path


# --- Models and training (Keras 3 or tf_keras) -------------------------------


def build_model(keras):
    """The reference CNN of BENCHMARKS.md (logits out), in `keras`.

    One definition for both tools: the tfmot worker must rebuild exactly the
    architecture whose Keras 3 weights it loads.
    """
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


def compile_model(keras, model, learning_rate):
    """Adam(`learning_rate`), cross-entropy on logits, accuracy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


@functools.cache
def _epoch_timer_class(callback_base):
    # One class per Keras (Keras 3 or tf_keras): each only accepts callbacks
    # derived from its own `Callback`.
    class EpochTimer(callback_base):
        """Records the wall time of every epoch in `times`."""

        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer


def fit_timed(keras, model, x, y, batch_size, epochs, callbacks=()):
    """Fits a compiled `model` silently; returns the seconds of each epoch.

    `callbacks` (e.g. the pruning step update) run before the epoch timer,
    the order every benchmark has used, so that timings stay comparable
    with earlier runs.
    """
    timer = _epoch_timer_class(keras.callbacks.Callback)()
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        callbacks=[*callbacks, timer],
        verbose=0,
    )
    return timer.times


def outputs_accuracy(outputs, y):
    """Top-1 accuracy of logits (or probabilities) `outputs` on labels `y`."""
    return float(np.mean(np.argmax(outputs, axis=-1) == y))


def accuracy(model, x, y):
    """Top-1 accuracy of a Keras model on `(x, y)`."""
    return outputs_accuracy(model.predict(x, batch_size=512, verbose=0), y)


def kernel_sparsity(keras, model):
    """Fraction of zeros in the kernels of the Conv2D and Dense layers."""
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = layer.get_weights()[0]  # the kernel, then the bias
            zeros += int(np.sum(kernel == 0))
            total += kernel.size
    return zeros / total


# --- Fine-tune benchmarks (pruning, QAT): the Keras 3 side -------------------


def _train(keras, cfg, seed, data, stage, weights, wrap=None, callbacks=()):
    # The one training loop of the Keras 3 side. The seed is set before
    # the model is built, so that every training of a seed sees the same
    # data order. `stage` is "baseline" or "finetune" (its epochs and rate).
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build_model(keras)
    if weights is not None:
        model.set_weights(weights)
    if wrap is not None:
        model = wrap(model)
    compile_model(keras, model, cfg[f"{stage}_lr"])
    times = fit_timed(
        keras,
        model,
        x_train,
        y_train,
        cfg["batch_size"],
        cfg[f"{stage}_epochs"],
        callbacks,
    )
    figures = {
        "epoch_times": times,
        "keras_acc": accuracy(model, x_test, y_test),
    }
    return model, figures


def train_baseline(keras, cfg, seed, data):
    """Trains the Keras 3 baseline every fine-tune of a seed starts from.

    Returns `(weights, figures)`, figures being its epoch times and accuracy.
    """
    print(
        f"\n== seed {seed}: Keras 3 baseline "
        f"({cfg['baseline_epochs']} epochs) ...",
        flush=True,
    )
    model, figures = _train(keras, cfg, seed, data, "baseline", None)
    return model.get_weights(), figures


def fine_tune(keras, cfg, seed, weights, data, wrap=None, callbacks=()):
    """Fine-tunes the reference CNN from `weights`, `wrap(model)` if given.

    `callbacks` go before the epoch timer. Returns `(model, figures)`,
    figures being its epoch times and test accuracy.
    """
    return _train(keras, cfg, seed, data, "finetune", weights, wrap, callbacks)


def finetune_config(quick):
    """The training recipe of the fine-tune benchmarks (`--quick`: short).

    Returns a new dict; a script adds its own settings to it.
    """
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
    }


def measure_file(content, x_test, y_test, latency_runs):
    """File accuracy, sizes and latency of one LiteRT flatbuffer.

    Every file of both tools goes through this one function, so that the
    figures of keras_compress and tfmot are measured the same way.
    """
    import keras_compress as kc  # Keras 3: main processes only

    outputs = kc.convert.run_tflite(content, x_test)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    num_bytes, gzip_bytes = kc.convert.file_sizes(content)
    latency = kc.convert.measure_latency(
        content, sample=x_test[:1], num_runs=latency_runs, num_threads=1
    )
    return {
        "file_acc": outputs_accuracy(outputs, y_test),
        "bytes": int(num_bytes),
        "gzip_bytes": int(gzip_bytes),
        "latency_s": float(latency),
    }


def measure_run_file(content, run, plain_run, x_test, y_test, latency_runs):
    """`measure_file`, plus the figures of the fine-tune the file comes from.

    `run` and `plain_run` hold `keras_acc` and `epoch_times`; epoch times
    are compared with the same tool's plain fine-tune of the same run, the
    only comparison that holds on a shared machine.
    """
    row = measure_file(content, x_test, y_test, latency_runs)
    row["keras_acc"] = run["keras_acc"]
    row["epoch_s"] = min(run["epoch_times"])
    row["epoch_vs_plain"] = row["epoch_s"] / min(plain_run["epoch_times"])
    return row


def save_weights(path, weights):
    """Saves a list of arrays to an `.npz` that `load_weights` reads back."""
    np.savez(path, **{f"w{i:02d}": w for i, w in enumerate(weights)})


def load_weights(path):
    """The list of arrays `save_weights` saved, in order."""
    with np.load(path) as data:
        return [data[f"w{i:02d}"] for i in range(len(data.files))]


def run_tfmot_worker(worker, cfg, seed, weights_path, work_dir, extra=()):
    """Runs a tfmot worker script in its own process; returns its report.

    tfmot 0.8 needs legacy Keras 2 (`tf_keras`) and cannot share a process
    with Keras 3: the worker gets `TF_USE_LEGACY_KERAS=1` and no
    `KERAS_BACKEND`. `extra` are the worker's own arguments.
    """
    from keras_compress import datasets  # Keras 3: main processes only

    command = [
        sys.executable,
        worker,
        "--weights",
        weights_path,
        "--datasets-py",
        datasets.__file__,
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
        *extra,
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
        # The command lets one rerun the worker by hand; the tail of its
        # stderr usually names the missing package or the failing step.
        raise RuntimeError(
            f"The tfmot worker failed (exit {result.returncode}). Is "
            "`pip install -e .[bench,litert]` done? Command:\n"
            f"{shlex.join(command)}\n--- stderr (tail) ---\n"
            f"{result.stderr[-4000:]}"
        )
    with open(os.path.join(work_dir, WORKER_REPORT)) as f:
        return json.load(f)


# --- Fine-tune benchmarks: the tfmot worker side (tf_keras) ------------------


def worker_parser(description):
    """The arguments every tfmot worker takes from `run_tfmot_worker`."""
    parser = argparse.ArgumentParser(description=description)
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
    return parser


def worker_data(args):
    """The main process's data: `load_demo_data` with the same arguments.

    `keras_compress/datasets.py` is loaded by file path, not as part of the
    package, so that Keras 3 is never imported in the worker.
    """
    spec = importlib.util.spec_from_file_location(
        "_kc_datasets", args.datasets_py
    )
    datasets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(datasets)
    return datasets.load_demo_data(
        max_train=args.max_train, max_test=args.max_test, seed=args.data_seed
    )


def worker_start(tf, tf_keras, args):
    """The first steps every worker takes, as the main process expects.

    Loads the data and the baseline weights, checks the weight transfer
    (the baseline's accuracy in tf_keras) and runs the plain fine-tune,
    tfmot's timing reference. Returns `(data, weights, report, model)`:
    `report` holds the data, versions, `baseline_keras_acc` and the
    `plain` figures; `model` is the fine-tuned plain model.
    """
    name, train, test = worker_data(args)
    (x_train, y_train), (x_test, y_test) = train, test
    weights = load_weights(args.weights)
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
    model = build_model(tf_keras)
    model.set_weights(weights)
    report["baseline_keras_acc"] = accuracy(model, x_test, y_test)
    tf_keras.utils.set_random_seed(args.seed)
    compile_model(tf_keras, model, args.learning_rate)
    times = fit_timed(
        tf_keras, model, x_train, y_train, args.batch_size, args.epochs
    )
    report["plain"] = {
        "epoch_times": times,
        "keras_acc": accuracy(model, x_test, y_test),
    }
    return (train, test), weights, report, model


def tflite_from_keras(tf, model, optimizations=()):
    """`TFLiteConverter.from_keras_model`, as a tfmot user converts."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if optimizations:
        converter.optimizations = list(optimizations)
    return converter.convert()


def write_worker_report(out_dir, report):
    """Writes the report `run_tfmot_worker` reads back."""
    with open(os.path.join(out_dir, WORKER_REPORT), "w") as f:
        json.dump(report, f, indent=2)


# --- Tables and means ---------------------------------------------------------

# Figures of the fine-tune tables, by name: (header, format, how the two
# tools compare: "diff" for accuracies, "ratio" for the rest).
FIGURES = {
    "keras_acc": ("keras acc", "{:.4f}", "diff"),
    "file_acc": ("file acc", "{:.4f}", "diff"),
    "bytes": ("bytes", "{:,.0f}", "ratio"),
    "gzip_bytes": ("gzip bytes", "{:,.0f}", "ratio"),
    "latency_s": ("latency us", None, "ratio"),
    "epoch_s": ("epoch s", "{:.2f}", "ratio"),
    "epoch_vs_plain": ("epoch/plain", "{:.3f}", "ratio"),
}


def tool_columns(*columns):
    """Columns for `format_tool_table`: names from `FIGURES`, or tuples
    `(figure, header, format, how)` for a script's own figures."""
    return tuple(
        (c, *FIGURES[c]) if isinstance(c, str) else tuple(c) for c in columns
    )


def format_cell(name, fmt, value):
    """One figure: latencies in microseconds, missing ones as `-`."""
    if value is None:
        return "-"
    if name == "latency_s":
        return f"{value * 1e6:.1f}"
    return fmt.format(value)


def format_table(header, groups, num_left=1):
    """A text table: `groups` of rows, a rule under the header and between
    groups, the first `num_left` columns left-aligned, the others right.

    A row with fewer cells than the header (e.g. an error message) aligns
    its first `num_left` cells and writes the rest as they are.
    """
    lines = [line for group in groups for line in group]
    full = [header] + [line for line in lines if len(line) == len(header)]
    widths = [max(len(line[i]) for line in full) for i in range(len(header))]

    def fmt_line(cells):
        out = [f"{c:<{w}}" for c, w in zip(cells[:num_left], widths)]
        if len(cells) < len(header):
            return " | ".join(out + list(cells[num_left:]))
        out += [
            f"{c:>{w}}" for c, w in zip(cells[num_left:], widths[num_left:])
        ]
        return " | ".join(out)

    rule = "-+-".join("-" * w for w in widths)
    text = [fmt_line(header), rule]
    for i, group in enumerate(groups):
        if i:
            text.append(rule)
        text.extend(fmt_line(cells) for cells in group)
    return "\n".join(text)


def format_tool_table(variants, labels, columns, tools, compare_label):
    """Variant x tool, plus a row comparing the two tools per variant.

    `variants[tool][key]` holds the figures; `labels` are `(key, label)`;
    `columns` are `(figure, header, format, how)`, `how` being `"diff"`
    (first tool minus second) or `"ratio"` (first over second).
    """
    header = ["variant", "tool"] + [c[1] for c in columns]
    groups = []
    for key, label in labels:
        group = []
        for tool in tools:
            row = variants[tool][key]
            cells = [format_cell(c[0], c[2], row[c[0]]) for c in columns]
            group.append([label, tool] + cells)
        ours, theirs = (variants[tool][key] for tool in tools)
        compare = []
        for name, _, _, how in columns:
            if how == "diff":
                compare.append(f"{ours[name] - theirs[name]:+.4f}")
            elif theirs[name]:
                compare.append(f"{ours[name] / theirs[name]:.2f}x")
            else:
                compare.append("-")
        group.append([label, compare_label] + compare)
        groups.append(group)
    return format_table(header, groups, num_left=2)


def mean_rows(rows, names=None):
    """Mean of each figure over `rows` (default: every figure of the first)."""
    names = rows[0] if names is None else names
    return {name: float(np.mean([row[name] for row in rows])) for name in names}


def mean_variants(per_seed, tools, keys):
    """`mean_rows` of `result["variants"][tool][key]` over the seeds."""
    return {
        tool: {
            key: mean_rows([r["variants"][tool][key] for r in per_seed])
            for key in keys
        }
        for tool in tools
    }
