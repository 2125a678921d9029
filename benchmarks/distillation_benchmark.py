"""Distillation on the reference workload: keras_compress vs Keras core.

The distillation variant of `BENCHMARKS.md`, in one invocation, per seed `s`:

1. Teacher: the reference CNN on Fashion-MNIST (60k/10k), Adam(1e-3),
   batch 128, 3 epochs, seed `s`.
2. Student: Conv2D(8, 3) -> MaxPool -> Flatten -> Dense(32) -> Dense(10)
   (logits). One set of initial weights per seed, shared by every run below,
   each trained 3 epochs with Adam(1e-3), batch 128:
   a. the student alone (sparse categorical cross-entropy): the reference;
   b. `keras_compress.distillation.Distiller`, keras.io arguments:
      `alpha=0.1, temperature=3`, default loss (T² · KL on softened
      probabilities);
   c. `keras.distillation.Distiller` with its defaults:
      `LogitsDistillation(temperature=3)` (loss `"kl_divergence"`),
      `student_loss_weight=0.5`;
   d. `keras.distillation.Distiller` with
      `LogitsDistillation(temperature=3, loss=keras.losses.KLDivergence())`
      (the only form in which it applies softmax and T²), same weights as c.

Prints the test accuracy of every student on the whole test set, the best
epoch time and its ratio to the student trained alone (the cost of the
teacher's forward pass), per seed and the mean over seeds. Usage:

    python benchmarks/distillation_benchmark.py              # seeds 0 and 1
    python benchmarks/distillation_benchmark.py --quick --seeds 0
    python benchmarks/distillation_benchmark.py --json out.json
"""

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_compress as kc  # noqa: E402
import keras_compress.demo  # noqa: E402, F401
import keras_compress.distillation  # noqa: E402, F401

VARIANTS = (
    # (key, label)
    ("alone", "student alone"),
    ("kc", "keras_compress Distiller"),
    ("keras_default", "keras.distillation defaults"),
    ("keras_kld", "keras.distillation + KLDivergence()"),
)
PACKAGES = ("numpy", "tensorflow", "keras", "keras-compress")


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def build_student():
    """The student of the issue: Conv2D(8) + Dense(32), logits out."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(10),
        ],
        name="student",
    )


def _sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _accuracy(model, x, y):
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _versions():
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _fit(model, cfg, seed, x, y):
    """Trains `model` (compiled) with the same data order for every run."""
    keras.utils.set_random_seed(seed)
    timer = EpochTimer()
    model.fit(
        x,
        y,
        batch_size=cfg["batch_size"],
        epochs=cfg["epochs"],
        callbacks=[timer],
        verbose=0,
    )
    return timer.times


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def train_student(key, cfg, seed, teacher, initial_weights, data):
    """Trains one student variant; returns its accuracy and epoch times."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    student = build_student()
    student.set_weights(initial_weights)
    optimizer = keras.optimizers.Adam(cfg["lr"])
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="acc")]
    if key == "alone":
        model = student
        model.compile(optimizer=optimizer, loss=_sparse_ce(), metrics=metrics)
    elif key == "kc":
        model = kc.distillation.Distiller(student=student, teacher=teacher)
        model.compile(
            optimizer=optimizer,
            metrics=metrics,
            student_loss_fn=_sparse_ce(),
            alpha=cfg["alpha"],
            temperature=cfg["temperature"],
        )
    else:
        loss = (
            "kl_divergence"
            if key == "keras_default"
            else keras.losses.KLDivergence()
        )
        # keras.distillation freezes the teacher it is given in place
        # (`teacher.trainable = False`): give it a copy.
        model = keras.distillation.Distiller(
            teacher=_copy(teacher),
            student=student,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=cfg["temperature"], loss=loss
            ),
        )
        model.compile(optimizer=optimizer, loss=_sparse_ce(), metrics=metrics)
    times = _fit(model, cfg, seed, x_train, y_train)
    return {"epoch_times": times, "acc": _accuracy(student, x_test, y_test)}


def run_seed(cfg, seed, data):
    (x_train, y_train), (x_test, y_test) = data
    print(f"\n== seed {seed}: teacher ({cfg['epochs']} epochs) ...", flush=True)
    keras.utils.set_random_seed(seed)
    teacher = kc.demo.reference_cnn()
    teacher.compile(
        optimizer=keras.optimizers.Adam(cfg["lr"]),
        loss=_sparse_ce(),
        metrics=["accuracy"],
    )
    teacher_times = _fit(teacher, cfg, seed, x_train, y_train)
    result = {
        "teacher": {
            "epoch_times": teacher_times,
            "acc": _accuracy(teacher, x_test, y_test),
        }
    }
    keras.utils.set_random_seed(seed + 1000)
    initial_weights = build_student().get_weights()
    teacher_weights = [np.array(w) for w in teacher.get_weights()]
    runs = {}
    for key, label in VARIANTS:
        print(f"   {label} ({cfg['epochs']} epochs) ...", flush=True)
        runs[key] = train_student(
            key, cfg, seed, teacher, initial_weights, data
        )
    # Our Distiller must leave the teacher as it was.
    for before, after in zip(teacher_weights, teacher.get_weights()):
        if not np.array_equal(before, after):
            raise RuntimeError("The teacher's weights changed in training.")
    alone_epoch = min(runs["alone"]["epoch_times"])
    for run in runs.values():
        run["epoch_s"] = min(run["epoch_times"])
        run["epoch_vs_alone"] = run["epoch_s"] / alone_epoch
        run["acc_vs_alone"] = run["acc"] - runs["alone"]["acc"]
    result["runs"] = runs
    return result


def mean_runs(per_seed):
    mean = {}
    for key, _ in VARIANTS:
        rows = [r["runs"][key] for r in per_seed]
        mean[key] = {
            name: float(np.mean([row[name] for row in rows]))
            for name in ("acc", "acc_vs_alone", "epoch_s", "epoch_vs_alone")
        }
    mean["teacher_acc"] = float(
        np.mean([r["teacher"]["acc"] for r in per_seed])
    )
    return mean


def format_table(runs):
    header = ["student", "test acc", "vs alone", "epoch s", "epoch/alone"]
    lines = [
        [
            label,
            f"{runs[key]['acc']:.4f}",
            f"{runs[key]['acc_vs_alone']:+.4f}",
            f"{runs[key]['epoch_s']:.2f}",
            f"{runs[key]['epoch_vs_alone']:.2f}",
        ]
        for key, label in VARIANTS
    ]
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(5)]

    def fmt(cells):
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])]
        return " | ".join([first] + rest)

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule] + [fmt(line) for line in lines])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="training seeds (default: 0 1); tables per seed and the mean",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 6000 train / 1000 test images, 1 epoch",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="keras_compress Distiller alpha (default 0.1, as on keras.io)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=3.0,
        help="temperature of every distiller (default 3)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write every figure to this file"
    )
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")

    wall_start = time.perf_counter()
    command = shlex.join([sys.executable] + sys.argv)
    versions = _versions()
    print(f"$ {command}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")

    cfg = {
        "quick": args.quick,
        "epochs": 1 if args.quick else 3,
        "batch_size": 128,
        "lr": 1e-3,
        "alpha": args.alpha,
        "temperature": args.temperature,
    }
    name, train, test = kc.datasets.load_demo_data(
        max_train=6000 if args.quick else None,
        max_test=1000 if args.quick else None,
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
        f"every model {cfg['epochs']} epochs Adam({cfg['lr']}), batch "
        f"{cfg['batch_size']}; keras_compress alpha={cfg['alpha']}, "
        f"T={cfg['temperature']}; keras.distillation T={cfg['temperature']}, "
        "student_loss_weight=0.5 (its default)"
    )

    per_seed = []
    for seed in args.seeds:
        result = run_seed(cfg, seed, (train, test))
        result["seed"] = seed
        per_seed.append(result)
        print(
            f"\n-- seed {seed}: teacher test acc "
            f"{result['teacher']['acc']:.4f}, best epoch "
            f"{min(result['teacher']['epoch_times']):.2f} s"
        )
        print(format_table(result["runs"]))

    mean = mean_runs(per_seed)
    if len(per_seed) > 1:
        print(
            f"\n== mean over seeds {args.seeds} (teacher test acc "
            f"{mean['teacher_acc']:.4f})"
        )
        print(format_table(mean))
    elapsed = time.perf_counter() - wall_start
    print(
        "\ntest acc: the student on the whole test set. vs alone: difference "
        "to the student trained alone. epoch s: best epoch; epoch/alone: "
        "against the student trained alone in the same run (distillation "
        "adds the teacher's forward pass)."
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
