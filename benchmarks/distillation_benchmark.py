"""Distillation on the reference workload: keras_compress vs Keras core.

The distillation variant of `BENCHMARKS.md`, in one invocation, per seed `s`:

1. Teacher: the reference CNN on Fashion-MNIST (60k/10k), Adam(1e-3),
   batch 128, 3 epochs (`--teacher-epochs`), seed `s` (225,034
   parameters).
2. Student (`--pair`): `reference`, Conv2D(8, 3) -> MaxPool -> Flatten ->
   Dense(32) -> Dense(10), 43,706 parameters (5.1x smaller than the
   teacher); or `tiny`, Conv2D(4, 3, stride 2) -> MaxPool -> Flatten ->
   Dense(16) -> Dense(10), 2,530 parameters (89x smaller). One set of
   initial weights per seed, shared by every run below, each trained 3
   epochs with Adam(1e-3), batch 128:
   a. the student alone (sparse categorical cross-entropy): the reference;
   b. `keras_compress.distillation.Distiller(student, teacher)` with no loss
      arguments: the default recipe (`alpha=0.5`,
      `CorrelationDistillation(temperature=1)` on the logits, and a hint
      between the layers that feed the two classifiers, weight 0.5); also
      with `cache_teacher_outputs=True`;
   c. its two halves: the correlation loss alone (`feature_distillations=
      []`) and the hint alone (`alpha=1`, hint weight `--hint-weight`);
   d. `keras_compress.distillation.Distiller` with the keras.io arguments
      `alpha=0.1, temperature=3` (T² · KL on softened probabilities);
   e. `keras.distillation.Distiller` with its defaults:
      `LogitsDistillation(temperature=3)` (loss `"kl_divergence"`),
      `student_loss_weight=0.5`;
   f. `keras.distillation.Distiller` with
      `LogitsDistillation(temperature=3, loss=keras.losses.KLDivergence())`
      (the only form in which it applies softmax and T²), same weights as e.

`--validation` trains on the first 50,000 training images and measures on
the last 10,000 (the test set is not touched): the default recipe was
chosen that way (docs/distillation.md).

Prints the test accuracy of every student on the whole test set, the best
epoch time and its ratio to the student trained alone (the cost of the
teacher's forward pass), per seed and the mean over seeds. Usage:

    python benchmarks/distillation_benchmark.py --seeds 0 1 2
    python benchmarks/distillation_benchmark.py --pair tiny --seeds 0 1 2
    python benchmarks/distillation_benchmark.py --teacher-epochs 10 \\
        --variants kc_default --seeds 0 1 2
    python benchmarks/distillation_benchmark.py --quick --seeds 0
    python benchmarks/distillation_benchmark.py --json out.json
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
import keras_compress.demo  # noqa: E402, F401
import keras_compress.distillation  # noqa: E402, F401

VARIANTS = (
    # (key, label)
    ("alone", "student alone"),
    ("kc_default", "keras_compress Distiller, default"),
    ("kc_default_cached", "  same, teacher outputs cached"),
    ("kc_dist", "  its loss alone (no hint)"),
    ("kc_hint", "  its hint alone (labels + hint)"),
    ("kc", "keras_compress Distiller, keras.io logits"),
    ("keras_default", "keras.distillation defaults"),
    ("keras_kld", "keras.distillation + KLDivergence()"),
)
PACKAGES = ("numpy", "tensorflow", "keras", "keras-compress")


# The students, by `--pair`: the reference workload's (43,706 parameters,
# 5.1x smaller than the reference CNN teacher's 225,034) and one 10x
# smaller still (2,530 parameters, 89x smaller than the teacher).
STUDENTS = {"reference": (8, 1, 32), "tiny": (4, 2, 16)}


def build_student(pair="reference"):
    """Conv2D(filters, stride) + MaxPool + Dense(hidden), logits out."""
    filters, strides, hidden = STUDENTS[pair]
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(filters, 3, strides=strides, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(hidden, activation="relu", name="hidden"),
            layers.Dense(10),
        ],
        name="student",
    )


def hidden_layer_name(teacher):
    """The teacher's Dense(128): the layer before its logits."""
    return teacher.layers[-2].name


def _sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(model, cfg, seed, x, y, epochs=None):
    """Trains `model` (compiled) with the same data order for every run."""
    keras.utils.set_random_seed(seed)
    return _common.fit_timed(
        keras, model, x, y, cfg["batch_size"], epochs or cfg["epochs"]
    )


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def variants(cfg):
    """The `(key, label)` of the students this run trains."""
    return [v for v in VARIANTS if v[0] in cfg["variants"]]


def train_student(key, cfg, seed, teacher, initial_weights, data):
    """Trains one student variant; returns its accuracy and epoch times."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    student = build_student(cfg["pair"])
    student.set_weights(initial_weights)
    optimizer = keras.optimizers.Adam(cfg["lr"])
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="acc")]
    if key == "alone":
        model = student
        model.compile(optimizer=optimizer, loss=_sparse_ce(), metrics=metrics)
    elif key.startswith("kc_default"):
        # No loss arguments: the default recipe.
        model = kc.distillation.Distiller(
            student=student,
            teacher=teacher,
            cache_teacher_outputs=key == "kc_default_cached",
        )
        model.compile(
            optimizer=optimizer, metrics=metrics, student_loss_fn=_sparse_ce()
        )
    elif key == "kc_dist":
        # The default recipe's loss without its automatic hint.
        model = kc.distillation.Distiller(
            student=student, teacher=teacher, feature_distillations=[]
        )
        model.compile(
            optimizer=optimizer,
            metrics=metrics,
            student_loss_fn=_sparse_ce(),
            distillation_loss_fn=kc.distillation.CorrelationDistillation(1.0),
            alpha=0.5,
        )
    elif key.startswith("kc"):
        hint = key.startswith("kc_hint")
        features = None
        if hint:
            features = kc.distillation.FeatureDistillation(
                hidden_layer_name(teacher), "hidden", weight=cfg["hint_weight"]
            )
        model = kc.distillation.Distiller(
            student=student,
            teacher=teacher,
            feature_distillations=features,
        )
        model.compile(
            optimizer=optimizer,
            metrics=metrics,
            student_loss_fn=_sparse_ce(),
            alpha=cfg["hint_alpha"] if hint else cfg["alpha"],
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
    start = time.perf_counter()
    times = _fit(model, cfg, seed, x_train, y_train)
    return {
        "fit_s": time.perf_counter() - start,
        "epoch_times": times,
        "acc": _common.accuracy(student, x_test, y_test),
    }


def run_seed(cfg, seed, data):
    (x_train, y_train), (x_test, y_test) = data
    epochs = cfg["teacher_epochs"]
    print(f"\n== seed {seed}: teacher ({epochs} epochs) ...", flush=True)
    keras.utils.set_random_seed(seed)
    teacher = kc.demo.reference_cnn()
    _common.compile_model(keras, teacher, cfg["lr"])
    teacher_times = _fit(teacher, cfg, seed, x_train, y_train, epochs)
    result = {
        "teacher": {
            "epoch_times": teacher_times,
            "acc": _common.accuracy(teacher, x_test, y_test),
        }
    }
    keras.utils.set_random_seed(seed + 1000)
    initial_weights = build_student(cfg["pair"]).get_weights()
    teacher_weights = [np.array(w) for w in teacher.get_weights()]
    runs = {}
    for key, label in variants(cfg):
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
        run["fit_vs_alone"] = run["fit_s"] / runs["alone"]["fit_s"]
        run["acc_vs_alone"] = run["acc"] - runs["alone"]["acc"]
    result["runs"] = runs
    return result


def mean_runs(per_seed):
    keys = list(per_seed[0]["runs"])
    mean = {
        key: _common.mean_rows(
            [r["runs"][key] for r in per_seed],
            (
                "acc",
                "acc_vs_alone",
                "epoch_s",
                "epoch_vs_alone",
                "fit_s",
                "fit_vs_alone",
            ),
        )
        for key in keys
    }
    mean["teacher_acc"] = float(
        np.mean([r["teacher"]["acc"] for r in per_seed])
    )
    return mean


def format_table(runs):
    header = [
        "student",
        "accuracy",
        "vs alone",
        "epoch s",
        "epoch/alone",
        "fit s",
        "fit/alone",
    ]
    lines = [
        [
            label,
            f"{runs[key]['acc']:.4f}",
            f"{runs[key]['acc_vs_alone']:+.4f}",
            f"{runs[key]['epoch_s']:.2f}",
            f"{runs[key]['epoch_vs_alone']:.2f}",
            f"{runs[key]['fit_s']:.1f}",
            f"{runs[key]['fit_vs_alone']:.2f}",
        ]
        for key, label in VARIANTS
        if key in runs
    ]
    return _common.format_table(header, [lines])


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(parser, "seeds", "quick")
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="alpha of the logits-only keras_compress Distiller (default "
        "0.1, as on keras.io)",
    )
    parser.add_argument(
        "--hint-weight",
        type=float,
        default=1.0,
        help="weight of the feature hint (teacher Dense(128) -> student "
        "Dense(32)) of the feature-hint variant (default 1)",
    )
    parser.add_argument(
        "--hint-alpha",
        type=float,
        default=1.0,
        help="alpha of the feature-hint variant (default 1: labels and hint, "
        "no logit term)",
    )
    parser.add_argument(
        "--pair",
        choices=sorted(STUDENTS),
        default="reference",
        help="the student: the reference workload's Conv2D(8) + Dense(32) "
        "(default), or 'tiny', Conv2D(4, stride 2) + Dense(16), 89x "
        "smaller than the teacher",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=[key for key, _ in VARIANTS],
        default=[key for key, _ in VARIANTS],
        help="the students to train (default: all); 'alone' is always "
        "trained, as the reference",
    )
    _common.add_arguments(parser, "validation")
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=3,
        help="epochs of the teacher (default 3, the reference workload; "
        "with --quick 1)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=3.0,
        help="temperature of every distiller (default 3)",
    )
    _common.add_arguments(
        parser, "json", json="also write every figure to this file"
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(PACKAGES)

    cfg = {
        "quick": args.quick,
        "epochs": 1 if args.quick else 3,
        "teacher_epochs": 1 if args.quick else args.teacher_epochs,
        "batch_size": 128,
        "lr": 1e-3,
        "alpha": args.alpha,
        "temperature": args.temperature,
        "hint_weight": args.hint_weight,
        "hint_alpha": args.hint_alpha,
        "validation": args.validation,
        "pair": args.pair,
        "variants": sorted(set(args.variants) | {"alone"}),
        "student_params": build_student(args.pair).count_params(),
    }
    name, train, test = _common.load_data(
        max_train=6000 if args.quick else None,
        max_test=1000 if args.quick else None,
    )
    if args.validation:
        train, test = _common.hold_out(train, args.quick)
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(train[0]), len(test[0])
    print(
        f"student: {args.pair} ({cfg['student_params']:,} parameters); "
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} "
        f"{'validation (held out of train)' if args.validation else 'test'}; "
        f"teacher {cfg['teacher_epochs']} epochs, every student "
        f"{cfg['epochs']} epochs Adam({cfg['lr']}), batch "
        f"{cfg['batch_size']}; keras_compress logits alpha={cfg['alpha']}, "
        f"T={cfg['temperature']}; feature hint weight {cfg['hint_weight']}, "
        f"alpha={cfg['hint_alpha']}; keras.distillation "
        f"T={cfg['temperature']}, "
        "student_loss_weight=0.5 (its default)"
    )

    per_seed = []
    for seed in args.seeds:
        result = run_seed(cfg, seed, (train, test))
        result["seed"] = seed
        per_seed.append(result)
        print(
            f"\n-- seed {seed}: teacher accuracy "
            f"{result['teacher']['acc']:.4f}, best epoch "
            f"{min(result['teacher']['epoch_times']):.2f} s"
        )
        print(format_table(result["runs"]))

    mean = mean_runs(per_seed)
    if len(per_seed) > 1:
        print(
            f"\n== mean over seeds {args.seeds} (teacher accuracy "
            f"{mean['teacher_acc']:.4f})"
        )
        print(format_table(mean))
    print(
        "\naccuracy: the student on the whole test set (with --validation: on "
        "the held-out end of the training set). vs alone: difference "
        "to the student trained alone. epoch s: best epoch; fit s: the whole "
        "fit() call (with cached teacher outputs: including the one teacher "
        "pass that fills the cache); X/alone: "
        "against the student trained alone in the same run (distillation "
        "adds the teacher's forward pass)."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
