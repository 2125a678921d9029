"""One Keras backend's side of `backends_benchmark.py` (a separate process).

The Keras backend is chosen once per process, before Keras is imported, so
each backend runs here in its own process: the reference CNN from the
baseline weights the main process trained, the plain, pruned, QAT and
clustered fine-tunes of BENCHMARKS.md, each file converted with
`keras_compress.convert.to_tflite` (on JAX and PyTorch through its
TensorFlow worker process) and measured by `_common.measure_run_file`.
Writes its figures to `--out-dir/backend_report.json`.
"""

import argparse
import json
import os
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", required=True, help="the run's cfg, JSON")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import _common
    import keras

    import keras_compress as kc

    if keras.backend.backend() != args.backend:
        sys.exit(f"Keras runs {keras.backend.backend()}, not {args.backend}")
    cfg = json.loads(args.config)
    _, train, test = _common.load_data(
        cfg["max_train"], cfg["max_test"], cfg["data_seed"]
    )
    data = (train, test)
    x_train, (x_test, y_test) = train[0], test
    weights = _common.load_weights(args.weights)
    steps = -(-len(x_train) // cfg["batch_size"]) * cfg["finetune_epochs"]

    def fine_tune(name, wrap=None, callbacks=()):
        print(f"== {args.backend}: {name} ...", flush=True)
        return _common.fine_tune(
            keras, cfg, args.seed, weights, data, wrap, callbacks
        )

    plain, plain_run = fine_tune("plain")
    schedule = kc.pruning.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=int(0.7 * steps), frequency=50
    )
    pruned, pruned_run = fine_tune(
        "pruned 80 %",
        wrap=lambda m: kc.pruning.prune_low_magnitude(
            m, pruning_schedule=schedule
        ),
        callbacks=[kc.pruning.UpdatePruningStep()],
    )
    qat, qat_run = fine_tune("QAT int8", wrap=kc.quantization.quantize_model)
    clustered, clustered_run = fine_tune(
        "clustered 16",
        wrap=lambda m: kc.clustering.cluster_weights(
            m, number_of_clusters=16, cluster_centroids_init="kmeans++"
        ),
    )
    models = {
        "dense float32": (plain, "float32", plain_run),
        "pruned 80 %": (
            kc.pruning.strip_pruning(pruned),
            "float32",
            pruned_run,
        ),
        "QAT int8": (qat, "int8", qat_run),
        "clustered 16": (
            kc.clustering.strip_clustering(clustered),
            "float32",
            clustered_run,
        ),
    }
    rows = {}
    for name, (model, mode, run) in models.items():
        content = kc.convert.to_tflite(model, mode, verbose=0)
        row = _common.measure_run_file(
            content, run, plain_run, x_test, y_test, cfg["latency_runs"]
        )
        row["sparsity"] = kc.convert.kernel_sparsity(model)
        rows[name] = row
        print(
            f"   {name}: file acc {row['file_acc']:.4f}, best epoch "
            f"{row['epoch_s']:.1f} s",
            flush=True,
        )
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "backend_report.json"), "w") as f:
        json.dump({"backend": args.backend, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
