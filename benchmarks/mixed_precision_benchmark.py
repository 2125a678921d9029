"""Mixed precision on the reference workload: float32 vs mixed_bfloat16.

Per seed `s`, in one invocation: the reference CNN of `BENCHMARKS.md` on
Fashion-MNIST (60k/10k), one set of initial weights, trained 3 epochs with
Adam(1e-3), batch 128, under

- `float32` (the reference), and
- `mixed_bfloat16` through `kc.mixed_precision.apply_policy` (bfloat16
  compute, float32 variables, float32 logits layer),
- optionally (`--float16`) `mixed_float16` with loss scaling; this CPU has
  no float16 arithmetic, so expect it to be several times slower.

Prints the best epoch time and its ratio to float32, the Keras test
accuracy, and the accuracy of the float32 LiteRT file converted from each
model (`kc.mixed_precision.to_float32` then `kc.convert.to_tflite`). Usage:

    python benchmarks/mixed_precision_benchmark.py          # seeds 0 and 1
    python benchmarks/mixed_precision_benchmark.py --quick --seeds 0
    python benchmarks/mixed_precision_benchmark.py --float16 --json out.json
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
import keras_compress.demo  # noqa: E402, F401
import keras_compress.mixed_precision  # noqa: E402, F401


def train_policy(policy, cfg, seed, initial_weights, data):
    """Trains the reference CNN under `policy`; returns its figures."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = kc.demo.reference_cnn()
    model.set_weights(initial_weights)
    if policy != "float32":
        model = kc.mixed_precision.apply_policy(model, policy)
    # Keras wraps the optimizer in a LossScaleOptimizer for mixed_float16
    # (the copy's own policy); bfloat16 needs no loss scaling.
    _common.compile_model(keras, model, cfg["lr"])
    keras.utils.set_random_seed(seed)
    times = _common.fit_timed(
        keras, model, x_train, y_train, cfg["batch_size"], cfg["epochs"]
    )
    keras_outputs = model.predict(x_test, batch_size=512, verbose=0)
    content = kc.convert.to_tflite(kc.mixed_precision.to_float32(model))
    file_outputs = kc.convert.run_tflite(content, x_test)
    return {
        "epoch_times": times,
        "epoch_s": min(times),
        "keras_acc": _common.outputs_accuracy(keras_outputs, y_test),
        "file_acc": _common.outputs_accuracy(file_outputs, y_test),
        "max_abs_diff": float(
            np.max(np.abs(file_outputs - keras_outputs.astype("float32")))
        ),
        "optimizer": type(model.optimizer).__name__,
    }


def run_seed(cfg, seed, data):
    keras.utils.set_random_seed(seed)
    initial_weights = kc.demo.reference_cnn().get_weights()
    runs = {}
    for policy in cfg["policies"]:
        print(f"   seed {seed}: {policy} ({cfg['epochs']} epochs) ...")
        runs[policy] = train_policy(policy, cfg, seed, initial_weights, data)
    base = runs["float32"]["epoch_s"]
    for run in runs.values():
        run["epoch_vs_float32"] = run["epoch_s"] / base
    return runs


def format_table(runs, policies):
    header = [
        "policy",
        "epoch s",
        "epoch/f32",
        "keras acc",
        "file acc",
        "max|file-keras|",
    ]
    lines = [
        [
            policy,
            f"{runs[policy]['epoch_s']:.2f}",
            f"{runs[policy]['epoch_vs_float32']:.2f}",
            f"{runs[policy]['keras_acc']:.4f}",
            f"{runs[policy]['file_acc']:.4f}",
            f"{runs[policy]['max_abs_diff']:.4f}",
        ]
        for policy in policies
    ]
    return _common.format_table(header, [lines])


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(parser, "seeds", "quick")
    parser.add_argument(
        "--float16",
        action="store_true",
        help="also train under mixed_float16 (slow on CPUs)",
    )
    _common.add_arguments(
        parser, "json", json="also write every figure to this file"
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(
        _common.PACKAGES,
        machine_note="; 'auto' policy here: "
        f"{kc.mixed_precision.resolve_policy('auto')}",
    )
    policies = ["float32", "mixed_bfloat16"]
    if args.float16:
        policies.append("mixed_float16")
    cfg = {
        "quick": args.quick,
        "epochs": 1 if args.quick else 3,
        "batch_size": 128,
        "lr": 1e-3,
        "policies": policies,
    }
    name, train, test = _common.load_data(
        max_train=6000 if args.quick else None,
        max_test=1000 if args.quick else None,
    )
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(train[0]), len(test[0])
    print(
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} test; "
        f"reference CNN, {cfg['epochs']} epochs Adam({cfg['lr']}), batch "
        f"{cfg['batch_size']}"
    )

    per_seed = []
    for seed in args.seeds:
        runs = run_seed(cfg, seed, (train, test))
        per_seed.append({"seed": seed, "runs": runs})
        print(f"\n-- seed {seed}")
        print(format_table(runs, policies))

    mean = {
        policy: _common.mean_rows(
            [r["runs"][policy] for r in per_seed],
            (
                "epoch_s",
                "epoch_vs_float32",
                "keras_acc",
                "file_acc",
                "max_abs_diff",
            ),
        )
        for policy in policies
    }
    if len(per_seed) > 1:
        print(f"\n== mean over seeds {args.seeds}")
        print(format_table(mean, policies))
    print(
        "\nepoch s: best epoch; epoch/f32: against float32 in the same run. "
        "keras acc: the trained Keras model on the whole test set; file acc: "
        "its float32 LiteRT file; max|file-keras|: largest logit difference "
        "between the two (bfloat16 rounding in Keras)."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
