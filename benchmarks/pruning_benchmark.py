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

import math
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402

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
PACKAGES = _common.PACKAGES + _common.TFMOT_PACKAGES


def run_keras_compress(cfg, seed, baseline_weights, data):
    """Plain and keras_compress pruning fine-tunes; returns runs and files."""
    _, (x_test, y_test) = data
    # (a) plain fine-tune: the timing reference and the dense variant.
    runs = {}
    plain, runs["plain"] = _common.fine_tune(
        keras, cfg, seed, baseline_weights, data
    )
    files = {
        "plain": {
            "float32": kc.convert.to_tflite(plain, "float32", sparse=False)
        }
    }

    # (b) keras_compress pruning fine-tune from the same weights.
    schedule = kc.pruning.PolynomialDecay(
        0.0,
        cfg["final_sparsity"],
        begin_step=0,
        end_step=cfg["end_step"],
        frequency=cfg["frequency"],
    )
    pruned, runs["pruned"] = _common.fine_tune(
        keras,
        cfg,
        seed,
        baseline_weights,
        data,
        wrap=lambda model: kc.pruning.prune_low_magnitude(
            model, pruning_schedule=schedule
        ),
        callbacks=[kc.pruning.UpdatePruningStep()],
    )
    stripped = kc.pruning.strip_pruning(pruned)
    runs["pruned"]["stripped_keras_acc"] = _common.accuracy(
        stripped, x_test, y_test
    )
    runs["pruned"]["kernel_sparsity"] = _common.kernel_sparsity(keras, stripped)
    files["pruned"] = {
        "float32": kc.convert.to_tflite(stripped, "float32", sparse=False),
        "sparse": kc.convert.to_tflite(stripped, "float32", sparse=True),
    }
    return runs, files


def run_tfmot(cfg, seed, weights_path, work_dir):
    """Runs the tfmot worker in its own process; returns runs and files."""
    extra = []  # the pruning recipe: --final-sparsity, --end-step, ...
    for key in ("final_sparsity", "end_step", "frequency"):
        extra += ["--" + key.replace("_", "-"), str(cfg[key])]
    report = _common.run_tfmot_worker(
        WORKER, cfg, seed, weights_path, work_dir, extra
    )
    files = {}
    for run in ("plain", "pruned"):
        files[run] = {}
        for kind, path in report[run].pop("files").items():
            with open(path, "rb") as f:
                files[run][kind] = f.read()
    return report, files


def run_seed(cfg, seed, data, keep_dir=None):
    _, (x_test, y_test) = data
    baseline_weights, baseline = _common.train_baseline(keras, cfg, seed, data)
    result = {"baseline": baseline}
    with tempfile.TemporaryDirectory(prefix="kc_pruning_bench_") as work:
        weights_path = os.path.join(work, "baseline.npz")
        _common.save_weights(weights_path, baseline_weights)
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
        for tool, by_run in files.items():
            for run, by_kind in by_run.items():
                for kind, content in by_kind.items():
                    name = f"seed{seed}_{tool}_{run}_{kind}.tflite"
                    _common.write_file(keep_dir, name, content)

    print("   measuring LiteRT files ...", flush=True)
    result["runs"] = runs
    result["variants"] = {}
    for tool in TOOLS:
        rows = {}
        for key, _, run, kind in VARIANTS:
            rows[key] = _common.measure_run_file(
                files[tool][run][kind],
                runs[tool][run],
                runs[tool]["plain"],
                x_test,
                y_test,
                cfg["latency_runs"],
            )
        for row in rows.values():
            row["gzip_vs_dense"] = (
                row["gzip_bytes"] / rows["dense"]["gzip_bytes"]
            )
        result["variants"][tool] = rows
    return result


def mean_variants(per_seed):
    """Mean of every figure over the seeds."""
    return _common.mean_variants(per_seed, TOOLS, [key for key, *_ in VARIANTS])


COLUMNS = _common.tool_columns(
    "keras_acc",
    "file_acc",
    "bytes",
    "gzip_bytes",
    ("gzip_vs_dense", "gzip/dense", "{:.3f}", "ratio"),
    "latency_s",
    "epoch_s",
    "epoch_vs_plain",
)


def format_table(variants):
    """One table: variant x tool, plus a keras_compress/tfmot row."""
    return _common.format_tool_table(
        variants,
        [(key, label) for key, label, *_ in VARIANTS],
        COLUMNS,
        TOOLS,
        "kc/tfmot",
    )


def make_config(args, num_train):
    cfg = _common.finetune_config(args.quick)
    cfg["final_sparsity"] = 0.8
    cfg["latency_runs"] = args.latency_runs
    if args.quick:
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
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(
        parser,
        "seeds",
        "quick",
        "json",
        "latency_runs",
        "keep_files",
        seeds="training seeds (default: 0 1); the table "
        "reports each seed and the mean",
        quick="smoke test: 6000 train / 1000 test images, 1 epoch per training",
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(PACKAGES)

    name, train, test = _common.load_data()
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
        bench.add_worker_versions(result.pop("tfmot_versions"))
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
    print(
        "\nepoch s: best epoch of each fine-tune; epoch/plain: against the "
        "same tool's plain fine-tune in the same run. kc/tfmot: ratio "
        "keras_compress / tfmot (accuracies: difference)."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
