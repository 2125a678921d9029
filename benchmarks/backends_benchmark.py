"""The reference recipe on every Keras backend: TensorFlow, JAX, PyTorch.

For each seed:

1. **Baseline** (this process, TensorFlow backend): the reference CNN of
   BENCHMARKS.md, 3 epochs. Its weights go to a temporary `.npz`.
2. **Each backend** (`_backend_worker.py`, one process per backend, because
   Keras picks its backend once per process), from the same baseline
   weights, 2 epochs Adam(1e-4), batch 128 each:
   - a *plain* fine-tune (the dense float32 file and the timing reference);
   - `prune_low_magnitude`, `PolynomialDecay(0 -> 80 %, end at 70 % of the
     steps, every 50)`, `strip_pruning`, a float32 file;
   - `quantize_model` (default int8 scheme), an int8 file;
   - `cluster_weights(16, "kmeans++")`, `strip_clustering`, a float32 file.
   Every file is converted with `kc.convert.to_tflite` (on JAX and PyTorch
   it goes through the TensorFlow worker process the API starts) and run
   in the LiteRT interpreter on the test set.

The table gives each backend's file accuracy and best epoch time, the
accuracy difference to the TensorFlow file of the same variant and the
epoch time relative to TensorFlow's *plain* epoch of the same run (the
goals of issue 13: within 0.5 points; a JAX epoch at most 1.2x).

    python benchmarks/backends_benchmark.py           # seed 0, full data
    python benchmarks/backends_benchmark.py --quick   # smoke test
    python benchmarks/backends_benchmark.py --backends tensorflow jax torch
"""

import json
import os
import subprocess
import sys
import tempfile

import _common

BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = ("dense float32", "pruned 80 %", "QAT int8", "clustered 16")
WORKER = os.path.join(os.path.dirname(__file__), "_backend_worker.py")


def run_backend(backend, cfg, seed, weights_path, work_dir):
    """Runs one backend's worker; returns its rows."""
    out_dir = os.path.join(work_dir, backend)
    command = [
        sys.executable,
        WORKER,
        "--backend",
        backend,
        "--weights",
        weights_path,
        "--config",
        json.dumps(cfg),
        "--seed",
        str(seed),
        "--out-dir",
        out_dir,
    ]
    environment = {**os.environ, "KERAS_BACKEND": backend}
    completed = subprocess.run(command, env=environment, check=False)
    if completed.returncode:
        raise RuntimeError(
            f"the {backend} worker failed (exit {completed.returncode})"
        )
    with open(os.path.join(out_dir, "backend_report.json")) as f:
        return json.load(f)["rows"]


def table(per_backend):
    reference = per_backend["tensorflow"]
    plain_epoch = reference["dense float32"]["epoch_s"]
    header = [
        "variant",
        "backend",
        "file acc",
        "vs TF (points)",
        "best epoch s",
        "vs TF plain epoch",
        "sparsity",
    ]
    groups = []
    for variant in VARIANTS:
        group = []
        for backend, rows in per_backend.items():
            row = rows[variant]
            delta = 100 * (row["file_acc"] - reference[variant]["file_acc"])
            group.append(
                [
                    variant,
                    backend,
                    f"{row['file_acc']:.4f}",
                    f"{delta:+.2f}",
                    f"{row['epoch_s']:.2f}",
                    f"{row['epoch_s'] / plain_epoch:.2f}x",
                    f"{row['sparsity']:.3f}",
                ]
            )
        groups.append(group)
    return _common.format_table(header, groups, num_left=2)


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(
        parser, "seeds", "quick", "json", "latency_runs", seeds="seeds"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=["tensorflow", "jax"],
        help="backends to run (default: tensorflow jax); tensorflow is "
        "always run first, as the reference",
    )
    parser.set_defaults(seeds=[0], latency_runs=100)
    args = parser.parse_args(argv)
    backends = ["tensorflow"] + [b for b in args.backends if b != "tensorflow"]
    bench = _common.BenchmarkRun(_common.PACKAGES + ("jax", "torch"))

    import keras

    cfg = _common.finetune_config(args.quick)
    cfg["latency_runs"] = args.latency_runs
    name, train, test = _common.load_data(
        cfg["max_train"], cfg["max_test"], cfg["data_seed"]
    )
    cfg["dataset"] = name
    print(
        f"data: {name}, {len(train[0])} train / {len(test[0])} test; "
        f"backends: {', '.join(backends)}"
    )
    results = []
    for seed in args.seeds:
        weights, baseline = _common.train_baseline(
            keras, cfg, seed, (train, test)
        )
        print(f"baseline accuracy {baseline['keras_acc']:.4f}", flush=True)
        with tempfile.TemporaryDirectory(prefix="backends_bench_") as work:
            weights_path = os.path.join(work, "baseline.npz")
            _common.save_weights(weights_path, weights)
            per_backend = {
                backend: run_backend(backend, cfg, seed, weights_path, work)
                for backend in backends
            }
        print(f"\n== seed {seed}\n{table(per_backend)}", flush=True)
        results.append({"seed": seed, "backends": per_backend})
    bench.finish(args.json, cfg, results=results)


if __name__ == "__main__":
    main()
