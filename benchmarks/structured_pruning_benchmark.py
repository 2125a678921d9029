"""Channel pruning on the reference workload: smaller and faster files.

Unstructured pruning makes a LiteRT file smaller but not faster (see
`pruning_benchmark.py`); channel pruning removes whole filters and rebuilds
a smaller model. For two models, in one invocation:

- the reference CNN of `BENCHMARKS.md` (`_common.build_model`);
- a small MobileNet-style residual model: Conv-BN-ReLU stem (stride 2),
  inverted-residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, Add
  skip), a depthwise-separable downsampling block, a 1x1 head conv,
  GlobalAveragePooling and a Dense classifier;

each seed does:

1. Baseline: Fashion-MNIST, Adam(1e-3), batch 128, 3 epochs.
2. Dense: a plain fine-tune from the baseline, 2 epochs Adam(1e-4).
3. Channel-pruned: `kc.pruning.prune_channels(baseline, 0.5)` removes 50 %
   of the output channels of every prunable layer (tied layers together;
   the classifier's outputs never), then a 2-epoch fine-tune with
   Adam(2e-3) decayed to 0 by a cosine schedule. Half the channels gone is
   a new architecture: the dense fine-tune's constant 1e-4 barely moves it
   (`--pruned-lr 1e-4 --pruned-schedule constant` reproduces that). The
   rate was chosen with `--validation` (50,000 / 10,000 of the training
   set), MobileNet-style model, seed 0: constant 1e-3 0.8570, cosine
   3e-4 0.8321, 1e-3 0.8837, 2e-3 0.8938, 3e-3 0.8946 (dense 0.9036).
   `--distill` adds soft targets from the unpruned baseline
   (`kc.distillation.Distiller`, alpha 0.1, T 3); on the validation split
   it cost 2 points (cosine 1e-3: 0.8622 with, 0.8837 without).
4. Both float32 LiteRT files are measured by the same code
   (`_common.measure_file`): accuracy on the whole test set, bytes, gzip
   bytes, median single-image latency with one thread.

With `--gradual`, a third variant fades the same fraction of channels out
during the fine-tune (`kc.pruning.GradualChannelPruning`, factor 1 -> 0
over the first 70 % of the steps) and rebuilds the smaller model after it.

Params and FLOPs (2 x MACs per image) come from `kc.analysis.profile`.
Goals of issue #6: params <= 0.30x, LiteRT latency <= 0.60x, file accuracy
drop <= 1.5 points. Usage:

    python benchmarks/structured_pruning_benchmark.py               # seed 0
    python benchmarks/structured_pruning_benchmark.py --quick --gradual
    python benchmarks/structured_pruning_benchmark.py --json out.json
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

GOALS = {"params": 0.30, "latency_s": 0.60, "acc_drop": 0.015}


def build_mobilenet_style(num_classes=10):
    """A small MobileNetV2-style residual CNN for 28x28x1 images.

    Most weights sit in 1x1 convolutions, as in MobileNets: a stride-2
    Conv-BN-ReLU stem, a depthwise-separable downsampling block, two
    inverted-residual blocks at 7x7 (1x1 expand x4, 3x3 depthwise, 1x1
    project, Add), a 1x1 head conv, global average pooling and the
    classifier. (Depthwise convolutions train slowly on CPUs; the blocks
    sit at 7x7 to keep an epoch affordable.) BatchNorm momentum 0.9 so
    that a short (`--quick`) run has usable moving statistics.
    """
    layers = keras.layers

    def conv_bn(x, filters, kernel, strides=1, relu=True, name=None):
        x = layers.Conv2D(
            filters, kernel, strides, padding="same", use_bias=False, name=name
        )(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.ReLU(6.0)(x) if relu else x

    def depthwise_bn(x, strides=1):
        x = layers.DepthwiseConv2D(3, strides, padding="same", use_bias=False)(
            x
        )
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.ReLU(6.0)(x)

    def inverted_residual(x, expansion):
        channels = x.shape[-1]
        y = conv_bn(x, channels * expansion, 1)
        y = depthwise_bn(y)
        y = conv_bn(y, channels, 1, relu=False)
        return layers.Add()([x, y])

    inputs = keras.Input((28, 28, 1))
    x = conv_bn(inputs, 32, 3, strides=2, name="stem")  # 14x14x32
    x = depthwise_bn(x, strides=2)  # 7x7x32
    x = conv_bn(x, 64, 1)  # depthwise-separable downsampling -> 7x7x64
    x = inverted_residual(x, 4)
    x = inverted_residual(x, 4)
    x = conv_bn(x, 256, 1, name="head")
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_style")


MODELS = (
    ("reference_cnn", "reference CNN", lambda: _common.build_model(keras)),
    ("mobilenet_style", "MobileNet-style", build_mobilenet_style),
)


def _steps(cfg, stage, num_train):
    """Optimizer steps of `stage`'s training."""
    return -(-num_train // cfg["batch_size"]) * cfg[f"{stage}_epochs"]


def _learning_rate(cfg, stage, num_train):
    """Adam's rate for `stage`: constant, or cosine-decayed to 0."""
    rate = cfg[f"{stage}_lr"]
    if cfg.get(f"{stage}_schedule", "constant") == "cosine":
        steps = _steps(cfg, stage, num_train)
        rate = keras.optimizers.schedules.CosineDecay(rate, steps)
    return rate


def _fit(cfg, model, data, stage, teacher=None):
    (x_train, y_train), (x_test, y_test) = data
    trainer = model
    rate = _learning_rate(cfg, stage, len(x_train))
    if teacher is not None:
        # Soft targets from the unpruned model (keras_compress's Distiller,
        # keras.io arguments); `model` is the student that gets measured.
        trainer = kc.distillation.Distiller(student=model, teacher=teacher)
        trainer.compile(
            optimizer=keras.optimizers.Adam(rate),
            metrics=[keras.metrics.SparseCategoricalAccuracy()],
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
            alpha=0.1,
            temperature=3.0,
        )
    else:
        _common.compile_model(keras, model, rate)
    times = _common.fit_timed(
        keras,
        trainer,
        x_train,
        y_train,
        cfg["batch_size"],
        cfg[f"{stage}_epochs"],
    )
    return {
        "epoch_s": min(times),
        "keras_acc": _common.accuracy(model, x_test, y_test),
    }


def _measure(model, run, data, latency_runs):
    _, (x_test, y_test) = data
    report = kc.analysis.profile(model)
    row = _common.measure_file(
        kc.convert.to_tflite(model, "float32"), x_test, y_test, latency_runs
    )
    row.update(run)
    row["params"] = report.total_params
    row["flops"] = report.total_flops
    return row, report


def _gradual(cfg, seed, data, build, weights):
    """Fades the planned channels out during the fine-tune, then rebuilds."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build()
    model.set_weights(weights)
    plan = kc.pruning.channel_plan(
        model, cfg["ratio"], criterion=cfg["criterion"]
    )
    steps = _steps(cfg, "pruned", len(x_train))
    callback = kc.pruning.GradualChannelPruning(
        plan,
        begin_step=0,
        end_step=max(1, int(0.7 * steps)),
        frequency=cfg["gradual_frequency"],
    )
    _common.compile_model(
        keras, model, _learning_rate(cfg, "pruned", len(x_train))
    )
    times = _common.fit_timed(
        keras,
        model,
        x_train,
        y_train,
        cfg["batch_size"],
        cfg["pruned_epochs"],
        callbacks=[callback],
    )
    small = kc.pruning.apply_channel_plan(model, plan)
    run = {
        "epoch_s": min(times),
        "keras_acc": _common.accuracy(small, x_test, y_test),
    }
    return small, run


def run_model(cfg, seed, data, key, build):
    """Baseline, dense fine-tune and channel-pruned fine-tune of one model."""
    _, (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    baseline = build()
    print(
        f"   {key}: baseline ({cfg['baseline_epochs']} epochs) ...", flush=True
    )
    result = {"baseline": _fit(cfg, baseline, data, "baseline")}
    weights = baseline.get_weights()

    print(f"   {key}: dense fine-tune ...", flush=True)
    keras.utils.set_random_seed(seed)
    dense = build()
    dense.set_weights(weights)
    dense_run = _fit(cfg, dense, data, "finetune")

    print(f"   {key}: channel pruning and fine-tune ...", flush=True)
    plan = kc.pruning.channel_plan(
        baseline, cfg["ratio"], criterion=cfg["criterion"]
    )
    pruned = kc.pruning.apply_channel_plan(baseline, plan)
    result["pruned_before_finetune_acc"] = _common.accuracy(
        pruned, x_test, y_test
    )
    keras.utils.set_random_seed(seed)
    teacher = baseline if cfg["distill"] else None
    pruned_run = _fit(cfg, pruned, data, "pruned", teacher=teacher)

    models = {"dense": (dense, dense_run), "pruned": (pruned, pruned_run)}
    if cfg["gradual"]:
        print(f"   {key}: gradual channel pruning fine-tune ...", flush=True)
        models["gradual"] = _gradual(cfg, seed, data, build, weights)

    print(f"   {key}: measuring LiteRT files ...", flush=True)
    rows, profiles = {}, {}
    for variant, (model, run) in models.items():
        rows[variant], profiles[variant] = _measure(
            model, run, data, cfg["latency_runs"]
        )
    dense_profile, pruned_profile = profiles["dense"], profiles["pruned"]
    result["variants"] = rows
    result["plan"] = plan.as_dict()
    result["profile_table"] = kc.analysis.compare_profiles(
        dense_profile, pruned_profile
    )
    return result


COLUMNS = (
    ("params", "params", "{:,.0f}", "ratio"),
    ("flops", "FLOPs", "{:,.0f}", "ratio"),
    ("keras_acc", "keras acc", "{:.4f}", "diff"),
    ("file_acc", "file acc", "{:.4f}", "diff"),
    ("bytes", "bytes", "{:,.0f}", "ratio"),
    ("gzip_bytes", "gzip bytes", "{:,.0f}", "ratio"),
    ("latency_s", "latency us", None, "ratio"),
    ("epoch_s", "epoch s", "{:.2f}", "ratio"),
)


def format_table(by_model):
    """Model x variant, plus a variant/dense row per pruned variant."""
    header = ["model", "variant"] + [c[1] for c in COLUMNS]
    groups = []
    for key, label, _ in MODELS:
        rows = by_model[key]
        group = []
        for variant in rows:
            cells = [
                _common.format_cell(name, fmt, rows[variant][name])
                for name, _, fmt, _ in COLUMNS
            ]
            group.append([label, variant] + cells)
        for variant in [v for v in rows if v != "dense"]:
            compare = []
            for name, _, _, how in COLUMNS:
                dense, small = rows["dense"][name], rows[variant][name]
                if how == "diff":
                    compare.append(f"{small - dense:+.4f}")
                else:
                    compare.append(f"{small / dense:.3f}x" if dense else "-")
            group.append([label, f"{variant}/dense"] + compare)
        groups.append(group)
    return _common.format_table(header, groups, num_left=2)


def goal_lines(by_model):
    lines = []
    for key, label, _ in MODELS:
        dense, pruned = by_model[key]["dense"], by_model[key]["pruned"]
        params = pruned["params"] / dense["params"]
        latency = pruned["latency_s"] / dense["latency_s"]
        drop = dense["file_acc"] - pruned["file_acc"]

        def verdict(ok):
            return "met" if ok else "NOT met"

        lines.append(
            f"{label}: params {params:.3f}x (goal <= {GOALS['params']}: "
            f"{verdict(params <= GOALS['params'])}), latency {latency:.3f}x "
            f"(goal <= {GOALS['latency_s']}: "
            f"{verdict(latency <= GOALS['latency_s'])}), file accuracy drop "
            f"{drop * 100:+.2f} points (goal <= {GOALS['acc_drop'] * 100}: "
            f"{verdict(drop <= GOALS['acc_drop'])})"
        )
    return lines


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    _common.add_arguments(
        parser,
        "seeds",
        "quick",
        "json",
        "latency_runs",
        seeds="training seeds (default: 0; the MobileNet-style model trains "
        "slowly on CPUs); tables per seed and the mean",
        quick="smoke test: 6000 train / 1000 test images, 1 epoch per training",
    )
    parser.add_argument(
        "--ratio",
        type=float,
        default=0.5,
        help="fraction of channels removed (default 0.5)",
    )
    parser.add_argument(
        "--criterion",
        default="l1",
        choices=("l1", "l2", "bn_gamma"),
        help="channel score (default l1; bn_gamma needs BatchNorm after "
        "every prunable layer, which the reference CNN lacks)",
    )
    parser.add_argument(
        "--gradual",
        action="store_true",
        help="also fade the channels out during the fine-tune with "
        "GradualChannelPruning (0 -> 70 %% of the steps), then rebuild",
    )
    parser.add_argument(
        "--pruned-lr",
        type=float,
        default=2e-3,
        help="Adam learning rate of the channel-pruned model's fine-tune "
        "(default 2e-3, chosen with --validation: half the channels gone is "
        "a new architecture, which the dense fine-tune's 1e-4 barely moves)",
    )
    parser.add_argument(
        "--pruned-schedule",
        default="cosine",
        choices=("cosine", "constant"),
        help="learning-rate schedule of the channel-pruned fine-tune "
        "(default cosine: decays to 0 over the 2 epochs; `--pruned-lr 1e-4 "
        "--pruned-schedule constant` is the dense fine-tune's recipe)",
    )
    parser.add_argument(
        "--distill",
        action="store_true",
        help="fine-tune the channel-pruned model with kc.distillation."
        "Distiller from the unpruned baseline (alpha 0.1, T 3)",
    )
    _common.add_arguments(parser, "validation")
    parser.set_defaults(seeds=[0])
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(_common.PACKAGES)

    cfg = _common.finetune_config(args.quick)
    cfg.update(
        ratio=args.ratio,
        criterion=args.criterion,
        latency_runs=args.latency_runs,
        gradual=args.gradual,
        gradual_frequency=10,
        distill=args.distill,
    )
    cfg["pruned_lr"] = args.pruned_lr
    cfg["pruned_schedule"] = args.pruned_schedule
    cfg["pruned_epochs"] = cfg["finetune_epochs"]
    name, train, test = _common.load_data(cfg["max_train"], cfg["max_test"])
    if args.validation:
        train, test = _common.hold_out(train, args.quick)
    cfg["validation"] = args.validation
    cfg["dataset"] = name
    cfg["num_train"], cfg["num_test"] = len(train[0]), len(test[0])
    print(
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} "
        f"{'validation (held out of train)' if args.validation else 'test'}; "
        f"baseline {cfg['baseline_epochs']} epochs Adam(1e-3); fine-tune "
        f"{cfg['finetune_epochs']} epochs Adam(1e-4) (channel-pruned: "
        f"Adam({cfg['pruned_lr']:g}), {cfg['pruned_schedule']} rate"
        f"{', distilled from the baseline' if cfg['distill'] else ''}), batch "
        f"{cfg['batch_size']}; prune_channels ratio {cfg['ratio']}, "
        f"criterion {cfg['criterion']}; latency: median of "
        f"{cfg['latency_runs']} single-image invokes, 1 thread"
    )

    per_seed = []
    for seed in args.seeds:
        print(f"\n== seed {seed}", flush=True)
        result = {"seed": seed, "models": {}}
        for key, _, build in MODELS:
            result["models"][key] = run_model(
                cfg, seed, (train, test), key, build
            )
        per_seed.append(result)
        for key, label, _ in MODELS:
            model_result = result["models"][key]
            print(
                f"\n-- seed {seed}, {label}: baseline acc "
                f"{model_result['baseline']['keras_acc']:.4f}; pruned "
                "before fine-tune "
                f"{model_result['pruned_before_finetune_acc']:.4f}"
            )
            print(model_result["profile_table"])
        variants = {
            key: result["models"][key]["variants"] for key, *_ in MODELS
        }
        print(f"\n-- seed {seed}: dense vs channel-pruned")
        print(format_table(variants))

    mean = {
        key: {
            variant: _common.mean_rows(
                [r["models"][key]["variants"][variant] for r in per_seed]
            )
            for variant in per_seed[0]["models"][key]["variants"]
        }
        for key, *_ in MODELS
    }
    if len(per_seed) > 1:
        print(f"\n== mean over seeds {args.seeds}")
        print(format_table(mean))
    print("\nGoals of issue #6 (one-shot pruning; mean over seeds):")
    for line in goal_lines(mean):
        print("  " + line)
    print(
        "\nX/dense: ratio to the dense model (accuracies: difference). "
        "pruned: one-shot prune_channels, then fine-tune; gradual: channels "
        "faded out during the fine-tune, then rebuilt. epoch s: best epoch "
        "of the fine-tune. FLOPs: 2 x multiply-accumulates per image."
    )
    bench.finish(args.json, cfg, per_seed=per_seed, mean=mean)
    return 0


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    sys.exit(main())
