"""`kc.compress()` on the reference workload, vs the recipes it replaces.

The workload of `BENCHMARKS.md`, in one invocation per seed:

1. Keras 3 baseline: the reference CNN on Fashion-MNIST, Adam(1e-3), batch
   128, 3 epochs, seed `s`, trained on the training set less its last 5,000
   images. Those 5,000 are the validation set every `compress()` call
   verifies its files on (the budget is judged there, never on the test
   set, and the baseline has not seen them).
2. The dense float32 file of the baseline: the reference for accuracy and
   size.
3. From the same trained baseline, each through `kc.compress(...,
   target="tflite-int8", max_accuracy_drop=0.01)`:
   a. **budget**: `recipe=None`, the recipe built from the budget
      (sensitivity scan, per-layer pruning, QAT, back-off), `epochs=2`;
   b. the hand-written recipes it replaces, each run once:
      **PTQ int8** (`recipe=[]`: plain conversion, 200 calibration images),
      **QAT** (`[QuantizeAware(epochs=2)]`) and **prune 80 % + QAT**
      (`[Prune(0.8, epochs=2), QuantizeAware(epochs=2)]`).
   Fine-tunes distill from the baseline (compress's default).
4. Every delivered file is measured here on the 10,000 test images by
   `_common.measure_file`: accuracy, raw and gzip -9 bytes, median latency
   of single-image invokes with one thread; plus the wall time of the whole
   `compress()` call.

Prints one table per seed (and the mean over seeds), then the goal of
issue #8: the budget recipe's file within 0.01 of the dense float32 file's
test accuracy at <= 0.15x its gzip bytes. Usage:

    python benchmarks/compress_benchmark.py                 # seed 0
    python benchmarks/compress_benchmark.py --quick
    python benchmarks/compress_benchmark.py --seeds 0 1 --json out.json
"""

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress import pipeline  # noqa: E402

TARGET = "tflite-int8"
MAX_ACCURACY_DROP = 0.01
# The goal of issue #8 for the budget recipe, against the dense float32 file.
GOAL_GZIP_RATIO = 0.15
NUM_VAL = 5000


def recipes(epochs):
    """`(key, label, recipe)`: the budget recipe first, then hand-written."""
    return (
        ("budget", "compress (budget)", None),
        ("ptq", "PTQ int8", []),
        ("qat", "QAT int8", [pipeline.QuantizeAware(epochs=epochs)]),
        (
            "prune_qat",
            "prune 80% + QAT",
            [
                pipeline.Prune(0.8, epochs=epochs),
                pipeline.QuantizeAware(epochs=epochs),
            ],
        ),
    )


def describe(recipe_config):
    """One line for a recipe config, e.g. `prune(...) -> quantize(...)`."""
    recipe = pipeline.Recipe.from_config(recipe_config)
    return " -> ".join(s.describe() for s in recipe.steps) or "convert only"


def split_validation(train, num_val):
    """`(fit, val)`: the last `num_val` training images are held out."""
    x, y = train
    return (x[:-num_val], y[:-num_val]), (x[-num_val:], y[-num_val:])


def run_seed(cfg, seed, data, keep_dir=None):
    fit_data, val_data, (x_test, y_test) = data
    weights, baseline = _common.train_baseline(
        keras, cfg, seed, (fit_data, (x_test, y_test))
    )
    keras.utils.set_random_seed(seed)
    model = _common.build_model(keras)
    model.set_weights(weights)
    # compress() takes the training loss from the compiled model.
    _common.compile_model(keras, model, cfg["finetune_lr"])

    dense = kc.convert.to_tflite(model, "float32", sparse=False)
    reference = _common.measure_file(dense, x_test, y_test, cfg["latency_runs"])
    reference["wall_s"] = None
    rows = {"float32": reference}
    details = {}
    for key, label, recipe in recipes(cfg["finetune_epochs"]):
        print(f"   compress: {label} ...", flush=True)
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        result = pipeline.compress(
            model,
            fit_data,
            val_data,
            target=TARGET,
            max_accuracy_drop=MAX_ACCURACY_DROP,
            recipe=recipe,
            epochs=cfg["finetune_epochs"],
            batch_size=cfg["batch_size"],
            latency_runs=0,  # measured below, the same way for every file
            distill=cfg["distill"],
            verbose=0,
        )
        wall = time.perf_counter() - start
        if keep_dir:
            _common.write_file(
                keep_dir, f"seed{seed}_{key}.tflite", result.content
            )
        row = _common.measure_file(
            result.content, x_test, y_test, cfg["latency_runs"]
        )
        report = result.report
        row.update(
            wall_s=wall,
            val_drop=report.final.accuracy_drop,
            val_budget_met=bool(result.budget_met),
            sparsity=report.final.sparsity,
        )
        rows[key] = row
        # The delivered file's recipe: the first within the budget, or
        # the most accurate try.
        delivered = report.recipes[report.final.attempt - 1]
        details[key] = {
            "recipe": delivered,
            "tries": len(report.recipes),
            "stages": [
                {
                    "stage": s.stage,
                    "attempt": s.attempt,
                    "val_file_acc": s.file_accuracy,
                    "val_drop": s.accuracy_drop,
                    "gzip_bytes": s.gzip_bytes,
                    "seconds": s.seconds,
                }
                for s in report.stages
            ],
        }
        print(
            f"     tries: {len(report.recipes)}, delivered "
            f"{describe(delivered)}; validation drop "
            f"{report.final.accuracy_drop:+.4f}, {wall:.0f} s",
            flush=True,
        )
    for row in rows.values():
        row["drop"] = reference["file_acc"] - row["file_acc"]
        row["gzip_vs_float"] = row["gzip_bytes"] / reference["gzip_bytes"]
        row["bytes_vs_float"] = row["bytes"] / reference["bytes"]
    return {"baseline": baseline, "variants": rows, "details": details}


COLUMNS = (
    # (figure, header, format)
    ("file_acc", "file acc", "{:.4f}"),
    ("drop", "drop vs f32", "{:+.4f}"),
    ("val_drop", "val drop", "{:+.4f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("gzip_bytes", "gzip bytes", "{:,.0f}"),
    ("gzip_vs_float", "gzip/f32", "{:.3f}"),
    ("sparsity", "sparsity", "{:.3f}"),
    ("latency_s", "latency us", None),
    ("wall_s", "wall s", "{:.0f}"),
)


def variant_labels(cfg):
    return [("float32", "dense float32")] + [
        (key, label) for key, label, _ in recipes(cfg["finetune_epochs"])
    ]


def format_table(variants, cfg):
    header = ["variant"] + [c[1] for c in COLUMNS]
    lines = []
    for key, label in variant_labels(cfg):
        row = variants[key]
        lines.append(
            [label]
            + [
                _common.format_cell(name, fmt, row.get(name))
                for name, _, fmt in COLUMNS
            ]
        )
    return _common.format_table(header, [lines[:1], lines[1:2], lines[2:]])


def mean_over(per_seed, cfg):
    keys = [key for key, _ in variant_labels(cfg)]
    means = {}
    for key in keys:
        rows = [r["variants"][key] for r in per_seed]
        means[key] = {
            name: (
                None
                if any(row.get(name) is None for row in rows)
                else _common.mean_rows(rows, [name])[name]
            )
            for name in rows[0]
        }
    return means


def check_goals(variants):
    """The goal of issue #8, for the budget recipe's file."""
    budget = variants["budget"]
    ratios = {
        key: row["gzip_vs_float"]
        for key, row in variants.items()
        if key not in ("float32", "budget") and row["drop"] <= MAX_ACCURACY_DROP
    }
    goals = [
        (
            f"test accuracy within {MAX_ACCURACY_DROP} of the dense float32 "
            "file",
            budget["drop"] <= MAX_ACCURACY_DROP,
            f"drop {budget['drop']:+.4f} (validation "
            f"{budget['val_drop']:+.4f})",
        ),
        (
            f"gzip bytes <= {GOAL_GZIP_RATIO}x dense float32",
            budget["gzip_vs_float"] <= GOAL_GZIP_RATIO,
            f"{budget['gzip_vs_float']:.3f}x ({budget['gzip_bytes']:,.0f} vs "
            f"{variants['float32']['gzip_bytes']:,.0f})",
        ),
        (
            "smaller than every hand-written recipe within the budget",
            all(budget["gzip_vs_float"] <= r for r in ratios.values()),
            ", ".join(f"{k} {r:.3f}x" for k, r in ratios.items()) or "none",
        ),
    ]
    return "\n".join(
        f"  [{'met' if ok else 'MISSED'}] {name}: {detail}"
        for name, ok, detail in goals
    )


def make_config(args):
    cfg = _common.finetune_config(args.quick)
    cfg["latency_runs"] = args.latency_runs
    # --quick holds out a sixth of its 6,000 images.
    cfg["num_val"] = 1000 if args.quick else NUM_VAL
    cfg["target"] = TARGET
    cfg["max_accuracy_drop"] = MAX_ACCURACY_DROP
    # The Distiller's default recipe, or the keras.io loss compress() used
    # before (for a side-by-side of the two).
    cfg["distill"] = (
        {"alpha": 0.1, "temperature": 3.0}
        if args.distill == "keras.io"
        else True
    )
    return cfg


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="training seeds (default: 0); one table per seed and the mean",
    )
    parser.add_argument(
        "--distill",
        choices=["default", "keras.io"],
        default="default",
        help="distillation of every fine-tune: the Distiller's default "
        "recipe, or the keras.io loss (alpha 0.1, T 3)",
    )
    _common.add_arguments(
        parser,
        "quick",
        "json",
        "latency_runs",
        "keep_files",
        quick="smoke test: 6000 train (1000 of them validation) / 1000 test "
        "images, 1 epoch per training",
        json="write every figure",
        keep_files="save every delivered LiteRT file here",
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(_common.PACKAGES)

    cfg = make_config(args)
    name, train, test = _common.load_data(
        cfg["max_train"], cfg["max_test"], cfg["data_seed"]
    )
    fit_data, val_data = split_validation(train, cfg["num_val"])
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(fit_data[0]), len(test[0])
    print(
        f"data: {name}, {cfg['num_train']} train + {cfg['num_val']} "
        f"validation (held out of the training set) / {cfg['num_test']} "
        f"test; baseline {cfg['baseline_epochs']} epochs Adam(1e-3); "
        f"compress: target {TARGET}, max_accuracy_drop {MAX_ACCURACY_DROP}, "
        f"{cfg['finetune_epochs']} epochs per step Adam(1e-4), batch "
        f"{cfg['batch_size']}, distilled from the baseline; latency: median "
        f"of {cfg['latency_runs']} single-image invokes, 1 thread"
    )

    per_seed = []
    for seed in args.seeds:
        result = run_seed(
            cfg, seed, (fit_data, val_data, test), args.keep_files
        )
        result["seed"] = seed
        per_seed.append(result)
        print(
            f"\n-- seed {seed}: baseline Keras acc "
            f"{result['baseline']['keras_acc']:.4f}; budget recipe: "
            f"{describe(result['details']['budget']['recipe'])}"
        )
        print(format_table(result["variants"], cfg))

    mean = mean_over(per_seed, cfg)
    if len(per_seed) > 1:
        print(f"\n== mean over seeds {args.seeds}")
        print(format_table(mean, cfg))
    print("\nissue #8 goal (compress budget recipe, mean over seeds):")
    print(check_goals(mean))
    print(
        "\nfile acc, drop vs f32: on the test set, against the dense float32 "
        "file; val drop: what compress() measured on its validation set "
        "(the budget); gzip/f32: gzip -9 bytes over the dense float32 "
        "file's; wall s: the whole compress() call (scan, fine-tunes, "
        "conversions, verification)."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
