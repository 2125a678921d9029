"""Low-rank factorization and BatchNorm folding on the reference workload.

Neither tfmot nor Keras core offers either technique, so each is compared
with the unchanged model of the same run.

Low rank, for each seed `s`:

1. Keras 3 baseline: the reference CNN of `BENCHMARKS.md` on Fashion-MNIST
   (60k/10k), Adam(1e-3), batch 128, 3 epochs.
2. `lowrank.factorize(model, rank_ratio=0.25, layers=[the Dense(128)])`:
   the 1600 x 128 kernel becomes 1600 x 32 and 32 x 128 (truncated SVD);
   accuracy with no fine-tune.
3. From the baseline weights, 2 epochs Adam(1e-4), batch 128: the plain
   model (the dense reference) and the factorized one.
4. LiteRT float32 files of both fine-tuned models, measured by
   `_common.measure_file`: accuracy on the whole test set, raw and gzip -9
   bytes, median latency of single-image invokes with one thread.

BatchNorm folding, for each seed: the reference CNN with a BatchNorm after
each convolution (convolutions without bias), trained like the baseline;
`kc.fusion.fold_batch_norms` on it; Keras accuracy and `predict` time of
both, and their LiteRT files (accuracy, ops, bytes, latency).

Usage:

    python benchmarks/lowrank_benchmark.py                 # seeds 0 and 1
    python benchmarks/lowrank_benchmark.py --quick --seeds 0
    python benchmarks/lowrank_benchmark.py --json out.json
"""

import collections
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402

import keras_compress as kc  # noqa: E402
from keras_compress import fusion  # noqa: E402
from keras_compress import lowrank  # noqa: E402

RANK_RATIO = 0.25
LOWRANK_VARIANTS = (
    # (key, label)
    ("baseline", "dense, baseline"),
    ("factorized", f"factorized r={RANK_RATIO:.0%}, no fine-tune"),
    ("dense_ft", "dense, fine-tuned"),
    ("factorized_ft", f"factorized r={RANK_RATIO:.0%}, fine-tuned"),
)
FOLD_VARIANTS = (("bn", "with BatchNorm"), ("folded", "folded"))


def dense_128_names(model):
    """The names of the model's Dense(128) layers."""
    return [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense) and layer.units == 128
    ]


def run_lowrank(cfg, seed, data):
    """Baseline, factorization and fine-tunes of one seed; one row each."""
    _, (x_test, y_test) = data
    weights, baseline = _common.train_baseline(keras, cfg, seed, data)
    model = _common.build_model(keras)
    model.set_weights(weights)
    names = dense_128_names(model)
    factorized, report = lowrank.factorize(
        model, rank_ratio=RANK_RATIO, layers=names, return_report=True
    )
    print(report)
    rows = {
        "baseline": {
            "params": model.count_params(),
            "keras_acc": baseline["keras_acc"],
        },
        "factorized": {
            "params": factorized.count_params(),
            "keras_acc": _common.accuracy(factorized, x_test, y_test),
        },
    }
    print(
        f"   fine-tunes ({cfg['finetune_epochs']} epochs, dense and "
        "factorized) ...",
        flush=True,
    )
    files = {}
    for key, wrap in (
        ("dense_ft", None),
        (
            "factorized_ft",
            lambda m: lowrank.factorize(
                m, rank_ratio=RANK_RATIO, layers=dense_128_names(m)
            ),
        ),
    ):
        tuned, run = _common.fine_tune(keras, cfg, seed, weights, data, wrap)
        files[key] = kc.convert.to_tflite(tuned, "float32", sparse=False)
        rows[key] = {
            "params": tuned.count_params(),
            "keras_acc": run["keras_acc"],
            "epoch_s": min(run["epoch_times"]),
            **_common.measure_file(
                files[key], x_test, y_test, cfg["latency_runs"]
            ),
        }
    for row in rows.values():
        row["params_vs_dense"] = row["params"] / rows["baseline"]["params"]
    return {
        "lowrank_layers": report.as_dict()["layers"],
        "lowrank": rows,
    }, files


def build_bn_model():
    """The reference CNN with a BatchNorm after each convolution."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10),
        ]
    )


def predict_seconds(models, x, rounds=5):
    """Seconds of `predict` on `x` for each model: the best of `rounds`,
    the models timed in turn so that load on the machine hits them alike."""
    for model in models:
        model.predict(x[:512], batch_size=512, verbose=0)  # warm-up
    best = [float("inf")] * len(models)
    for _ in range(rounds):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model.predict(x, batch_size=512, verbose=0)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def run_folding(cfg, seed, data):
    """The BatchNorm CNN of one seed, unfolded and folded; one row each."""
    (x_train, y_train), (x_test, y_test) = data
    print(f"   BatchNorm CNN ({cfg['baseline_epochs']} epochs) ...", flush=True)
    keras.utils.set_random_seed(seed)
    model = build_bn_model()
    _common.compile_model(keras, model, cfg["baseline_lr"])
    _common.fit_timed(
        keras,
        model,
        x_train,
        y_train,
        cfg["batch_size"],
        cfg["baseline_epochs"],
    )
    folded, report = fusion.fold_batch_norms(model, return_report=True)
    print(report)
    rows = {}
    files = {}
    for key, variant in (("bn", model), ("folded", folded)):
        files[key] = kc.convert.to_tflite(variant, "float32", sparse=False)
        ops = collections.Counter(
            op.op_name for op in kc.convert.op_details(files[key])
        )
        rows[key] = {
            "params": variant.count_params(),
            "keras_acc": _common.accuracy(variant, x_test, y_test),
            "batch_norms": sum(
                isinstance(layer, keras.layers.BatchNormalization)
                for layer in variant.layers
            ),
            "num_ops": sum(ops.values()),
            "mul_add_ops": ops["MUL"] + ops["ADD"],
            "ops": dict(ops),
            **_common.measure_file(
                files[key], x_test, y_test, cfg["latency_runs"]
            ),
        }
    seconds = predict_seconds([model, folded], x_test)
    for key, value in zip(("bn", "folded"), seconds):
        rows[key]["predict_s"] = value
    outputs = [kc.convert.run_tflite(files[key], x_test[:256]) for key in files]
    rows["folded"]["max_file_diff"] = float(abs(outputs[0] - outputs[1]).max())
    rows["folded"]["max_keras_diff"] = float(
        abs(
            model.predict(x_test[:256], verbose=0)
            - folded.predict(x_test[:256], verbose=0)
        ).max()
    )
    return {"folding": rows}, files


LOWRANK_COLUMNS = (
    ("params", "params", "{:,.0f}"),
    ("params_vs_dense", "params/dense", "{:.3f}"),
    ("keras_acc", "keras acc", "{:.4f}"),
    ("file_acc", "file acc", "{:.4f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("gzip_bytes", "gzip bytes", "{:,.0f}"),
    ("latency_s", "latency us", None),
    ("epoch_s", "epoch s", "{:.2f}"),
)
FOLD_COLUMNS = (
    ("params", "params", "{:,.0f}"),
    ("batch_norms", "BN layers", "{:.0f}"),
    ("keras_acc", "keras acc", "{:.4f}"),
    ("file_acc", "file acc", "{:.4f}"),
    ("predict_s", "keras predict s", "{:.3f}"),
    ("num_ops", "file ops", "{:.0f}"),
    ("mul_add_ops", "MUL+ADD ops", "{:.0f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("latency_s", "latency us", None),
)


def format_rows(rows, variants, columns):
    header = ["variant"] + [header for _, header, _ in columns]
    lines = [
        [label]
        + [
            _common.format_cell(name, fmt, rows[key].get(name))
            for name, _, fmt in columns
        ]
        for key, label in variants
    ]
    return _common.format_table(header, [lines])


def mean_of(per_seed, section, variants, columns):
    """Mean over seeds of the numeric figures of `section`."""
    mean = {}
    for key, _ in variants:
        rows = [result[section][key] for result in per_seed]
        mean[key] = {
            name: sum(row[name] for row in rows) / len(rows)
            for name, _, _ in columns
            if all(row.get(name) is not None for row in rows)
        }
    return mean


def print_tables(lowrank, folding):
    print("\nlow rank (Dense(128) at 25 % rank):")
    print(format_rows(lowrank, LOWRANK_VARIANTS, LOWRANK_COLUMNS))
    print("\nBatchNorm folding (reference CNN + BN after each conv):")
    print(format_rows(folding, FOLD_VARIANTS, FOLD_COLUMNS))


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(
        parser,
        "seeds",
        "quick",
        "json",
        "latency_runs",
        "keep_files",
        quick="smoke test: 6000 train / 1000 test images, 1 epoch per training",
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(_common.PACKAGES)
    cfg = _common.finetune_config(args.quick)
    cfg["rank_ratio"] = RANK_RATIO
    cfg["latency_runs"] = args.latency_runs
    name, train, test = _common.load_data(cfg["max_train"], cfg["max_test"])
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(train[0]), len(test[0])
    print(
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} test; "
        f"baseline {cfg['baseline_epochs']} epochs Adam(1e-3); fine-tune "
        f"{cfg['finetune_epochs']} epochs Adam(1e-4), batch "
        f"{cfg['batch_size']}; latency: median of {cfg['latency_runs']} "
        "single-image invokes, 1 thread"
    )

    per_seed = []
    for seed in args.seeds:
        result, files = run_lowrank(cfg, seed, (train, test))
        folding, fold_files = run_folding(cfg, seed, (train, test))
        result.update(folding)
        result["seed"] = seed
        per_seed.append(result)
        if args.keep_files:
            for key, content in {**files, **fold_files}.items():
                name = f"seed{seed}_{key}.tflite"
                _common.write_file(args.keep_files, name, content)
        print(f"\n-- seed {seed}")
        print_tables(result["lowrank"], result["folding"])
        folded = result["folding"]["folded"]
        print(
            "folded vs BatchNorm model, max |difference| of the outputs on "
            f"256 test images: Keras {folded['max_keras_diff']:.2e}, LiteRT "
            f"files {folded['max_file_diff']:.2e}"
        )

    mean = {
        "lowrank": mean_of(
            per_seed, "lowrank", LOWRANK_VARIANTS, LOWRANK_COLUMNS
        ),
        "folding": mean_of(per_seed, "folding", FOLD_VARIANTS, FOLD_COLUMNS),
    }
    if len(per_seed) > 1:
        print(f"\n== mean over seeds {args.seeds}")
        print_tables(mean["lowrank"], mean["folding"])
    print(
        "\nparams/dense: against the baseline model. file ops / MUL+ADD "
        "ops: operators in the LiteRT file. keras predict s: best of 5 "
        "predict() calls on the test set, batch 512."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
