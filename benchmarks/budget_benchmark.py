"""`kc.compress()` under size and latency budgets, vs single techniques.

For each model (the reference CNN of BENCHMARKS.md and the MobileNet-style
model of `structured_pruning_benchmark.py`), in one invocation:

1. Baseline: Fashion-MNIST less its last 5,000 training images (the
   validation set every `compress()` call judges its budgets on), Adam(1e-3),
   batch 128, 3 epochs, seed `s`.
2. Its dense float32 LiteRT file: the reference for bytes and latency.
3. From the same baseline, `kc.compress(..., target="tflite-int8",
   max_accuracy_drop=0.01, epochs=2)`:
   - **PTQ int8** (`recipe=[]`): the best single technique for latency;
   - **accuracy only**: today's search (sparsity, gzip bytes): the anchor
     of the wall-time goal;
   - **latency**: `max_latency=0.25` (reference CNN) or half the PTQ int8
     file's latency (MobileNet-style), the search over channels and bits;
   - **bytes** (reference CNN): `max_bytes=0.12`.
4. Every delivered file is measured here on the 10,000 test images with
   `_common.measure_file` (accuracy, bytes, median single-image latency,
   one thread), and against the dense float32 file of the same run.

Prints one table per model and the goals of issue #15. Usage:

    python benchmarks/budget_benchmark.py
    python benchmarks/budget_benchmark.py --quick --models reference
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

MAX_ACCURACY_DROP = 0.01
NUM_VAL = 5000


def _compress(cfg, model, data, **kwargs):
    fit_data, val_data, _ = data
    start = time.perf_counter()
    result = kc.compress(
        model,
        fit_data,
        val_data,
        target="tflite-int8",
        max_accuracy_drop=MAX_ACCURACY_DROP,
        epochs=cfg["finetune_epochs"],
        batch_size=cfg["batch_size"],
        latency_runs=cfg["latency_runs"],
        seed=cfg["seed"],
        verbose=0,
        **kwargs,
    )
    return result, time.perf_counter() - start


def run_model(cfg, key, build, data):
    fit_data, _, (x_test, y_test) = data
    print(f"\n== {key}: baseline ...", flush=True)
    keras.utils.set_random_seed(cfg["seed"])
    model = build()
    _common.compile_model(keras, model, cfg["baseline_lr"])
    model.fit(
        *fit_data,
        batch_size=cfg["batch_size"],
        epochs=cfg["baseline_epochs"],
        verbose=0,
    )
    # compress() fine-tunes with the compiled loss; Adam(1e-4) as elsewhere.
    _common.compile_model(keras, model, cfg["finetune_lr"])
    dense = kc.convert.to_tflite(model, "float32")
    reference = _common.measure_file(dense, x_test, y_test, cfg["latency_runs"])
    rows = {"float32": dict(reference, label="dense float32", wall_s=None)}

    variants = [("ptq", "PTQ int8", {"recipe": []})]
    variants.append(("accuracy", "compress, accuracy only", {}))
    for name, label, kwargs in variants:
        print(f"   {label} ...", flush=True)
        result, wall = _compress(cfg, model, data, **kwargs)
        rows[name] = _row(result, wall, label, x_test, y_test, cfg)
    if key == "reference":
        budgets = [
            ("latency", "max_latency=0.25", {"max_latency": 0.25}),
            ("bytes", "max_bytes=0.12", {"max_bytes": 0.12}),
        ]
    else:
        half = 0.5 * rows["ptq"]["latency_s"] * 1e6
        budgets = [
            (
                "latency",
                f"max_latency={half:.0f}us (0.5x PTQ int8)",
                {"max_latency": f"{half:.1f}us"},
            )
        ]
    for name, label, kwargs in budgets:
        print(f"   compress, {label} ...", flush=True)
        result, wall = _compress(cfg, model, data, **kwargs)
        rows[name] = _row(
            result, wall, f"compress, {label}", x_test, y_test, cfg
        )
        rows[name]["budgets"] = result.report.budget_checks
        rows[name]["search"] = result.report.search
    for row in rows.values():
        row["drop"] = reference["file_acc"] - row["file_acc"]
        row["bytes_x"] = row["bytes"] / reference["bytes"]
        row["latency_x"] = row["latency_s"] / reference["latency_s"]
    return rows


def _row(result, wall, label, x_test, y_test, cfg):
    row = _common.measure_file(
        result.content, x_test, y_test, cfg["latency_runs"]
    )
    report = result.report
    row.update(
        label=label,
        wall_s=wall,
        val_budget_met=bool(result.budget_met),
        recipe=report.recipes[report.final.attempt - 1],
        message=report.message,
    )
    print(f"     {report.message}", flush=True)
    return row


COLUMNS = (
    ("file_acc", "test acc", "{:.4f}"),
    ("drop", "drop vs f32", "{:+.4f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("bytes_x", "bytes/f32", "{:.3f}"),
    ("latency_s", "latency us", None),
    ("latency_x", "latency/f32", "{:.3f}"),
    ("wall_s", "wall s", "{:.0f}"),
)


def format_table(rows):
    header = ["variant"] + [c[1] for c in COLUMNS]
    lines = [
        [row["label"]]
        + [_common.format_cell(n, f, row.get(n)) for n, _, f in COLUMNS]
        for row in rows.values()
    ]
    return _common.format_table(header, [lines[:1], lines[1:]])


def goals(key, rows):
    lines = []

    def add(name, ok, detail):
        lines.append(f"  [{'met' if ok else 'MISSED'}] {key}: {name}: {detail}")

    base_wall = rows["accuracy"]["wall_s"]
    for name in ("latency", "bytes"):
        if name not in rows:
            continue
        row = rows[name]
        if name == "latency" and key == "reference":
            add(
                "max_latency=0.25 met on the test set",
                row["latency_x"] <= 0.25,
                f"{row['latency_x']:.3f}x (PTQ int8 "
                f"{rows['ptq']['latency_x']:.3f}x)",
            )
        elif name == "latency":
            ratio = row["latency_s"] / rows["ptq"]["latency_s"]
            add(
                "latency <= 0.5x its int8 file",
                ratio <= 0.5,
                f"{ratio:.3f}x",
            )
        else:
            add(
                "max_bytes=0.12 met",
                row["bytes_x"] <= 0.12,
                f"{row['bytes_x']:.3f}x",
            )
        add(
            f"{row['label']}: within {MAX_ACCURACY_DROP} of float32",
            row["drop"] <= MAX_ACCURACY_DROP,
            f"test drop {row['drop']:+.4f}; compress says: "
            f"{'met' if row['val_budget_met'] else 'not met'}",
        )
        add(
            f"{row['label']}: wall time < 3x accuracy-only compress()",
            row["wall_s"] < 3 * base_wall,
            f"{row['wall_s']:.0f} s vs {base_wall:.0f} s "
            f"({row['wall_s'] / base_wall:.2f}x)",
        )
    return lines


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=("reference", "mobilenet"),
        default=["reference", "mobilenet"],
    )
    _common.add_arguments(parser, "quick", "latency_runs", "json")
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(_common.PACKAGES)
    cfg = _common.finetune_config(args.quick)
    cfg.update(seed=args.seed, latency_runs=args.latency_runs)
    name, train, test = _common.load_data(
        max_train=cfg["max_train"], max_test=cfg["max_test"], seed=0
    )
    num_val = 1000 if args.quick else NUM_VAL
    (x, y) = train
    data = ((x[:-num_val], y[:-num_val]), (x[-num_val:], y[-num_val:]), test)
    print(
        f"data: {name}, {len(x) - num_val} train + {num_val} validation / "
        f"{len(test[0])} test; compress: tflite-int8, max_accuracy_drop "
        f"{MAX_ACCURACY_DROP}, {cfg['finetune_epochs']} epochs per step; "
        f"latency: median of {cfg['latency_runs']} single-image invokes, "
        "1 thread"
    )
    from structured_pruning_benchmark import build_mobilenet_style

    builds = {
        "reference": lambda: _common.build_model(keras),
        "mobilenet": build_mobilenet_style,
    }
    results, goal_lines = {}, []
    for key in args.models:
        rows = run_model(cfg, key, builds[key], data)
        results[key] = rows
        print(f"\n-- {key}")
        print(format_table(rows))
        for row in rows.values():
            if row.get("recipe") is not None:
                print(f"   {row['label']}: {row['recipe']}")
        goal_lines += goals(key, rows)
    print("\nissue #15 goals (one run):")
    print("\n".join(goal_lines))
    bench.finish(args.json, cfg, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
