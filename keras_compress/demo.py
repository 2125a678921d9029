"""The end-to-end demo: train, compress every way the package can, verify.

`keras-compress demo` runs `run_demo()`: it trains the reference CNN of
`shared/BENCHMARKS.md` on Fashion-MNIST (or an offline fallback), applies
each technique keras_compress has, converts every result to LiteRT, runs
each file in the LiteRT interpreter on the test set and prints one table.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from keras_compress import analysis
from keras_compress import convert
from keras_compress import datasets
from keras_compress import distillation
from keras_compress import lowrank
from keras_compress import pipeline
from keras_compress import pruning
from keras_compress import quantization


def reference_cnn(input_shape=(28, 28, 1), num_classes=10):
    """The reference small CNN (logits output).

    Args:
        input_shape: Image shape `(height, width, channels)`.
        num_classes: Number of output logits.

    Returns:
        An uncompiled Sequential model.
    """
    # Small images (the 8x8 digits fallback) would shrink to nothing after
    # two valid convolutions and poolings; pad the first one instead.
    first_padding = "same" if min(input_shape[:2]) < 16 else "valid"
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(
                32, 3, activation="relu", padding=first_padding
            ),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="reference_cnn",
    )


def student_cnn(input_shape=(28, 28, 1), num_classes=10):
    """The distillation student: Conv2D(8) + Dense(32), about 4x smaller.

    Args:
        input_shape: Image shape `(height, width, channels)`.
        num_classes: Number of output logits.

    Returns:
        An uncompiled Sequential model.
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="student_cnn",
    )


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@dataclasses.dataclass(frozen=True)
class DemoRow:
    """One line of the demo table.

    Attributes:
        variant: What was done to the model.
        keras_accuracy: Test accuracy of the Keras model.
        file_accuracy: Test accuracy of the LiteRT file.
        bytes: File size.
        gzip_bytes: File size after gzip -9.
        latency_us: Median single-image latency in microseconds.
        sparsity: Fraction of zeros in the prunable kernels.
    """

    variant: str
    keras_accuracy: float
    file_accuracy: float
    bytes: int
    gzip_bytes: int
    latency_us: float
    sparsity: float


def format_table(rows):
    """Renders demo rows as an aligned text table with ratios to row 0."""
    base = rows[0]
    header = (
        f"{'variant':<30} {'keras acc':>9} {'file acc':>9} {'bytes':>10} "
        f"{'gzip':>10} {'gzip x':>7} {'latency':>10} {'sparsity':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.variant:<30} {row.keras_accuracy:>9.4f} "
            f"{row.file_accuracy:>9.4f} {row.bytes:>10,} "
            f"{row.gzip_bytes:>10,} {row.gzip_bytes / base.gzip_bytes:>6.2f}x "
            f"{row.latency_us:>8.1f}us {row.sparsity:>8.1%}"
        )
    return "\n".join(lines)


def run_demo(
    epochs=3,
    finetune_epochs=2,
    max_train=None,
    max_test=None,
    sparsity=0.8,
    seed=0,
    latency_runs=300,
    output_dir=None,
    data_dir=None,
    log=print,
):
    """Trains the reference CNN, compresses it every way, verifies the files.

    Variants: the float32 original; float16, dynamic-range and full-int8
    post-training quantization; 80 % magnitude pruning and 2:4 pruning,
    each fine-tuned, stripped and stored sparse; pruning plus int8;
    quantization-aware training to an integer file; a 4x smaller student
    distilled from the original; half the channels of every layer removed
    and the Dense(128) layer factorized at a quarter of its rank, each
    fine-tuned; and `compress()`, which picks per-layer sparsities from a
    sensitivity scan and delivers an int8 file within one accuracy point
    of the original on held-out training images.

    Args:
        epochs: Baseline training epochs.
        finetune_epochs: Fine-tuning epochs of each compressed variant.
        max_train: Use at most this many training images (None: all).
        max_test: Evaluate on at most this many test images (None: all).
        sparsity: Final sparsity of magnitude pruning.
        seed: Random seed for data subsampling and training.
        latency_runs: Single-image invocations timed per file.
        output_dir: If given, the `.tflite` files and `report.json` are
            written there (atomically).
        data_dir: Folder holding the Fashion-MNIST IDX files, if not in a
            standard place.
        log: Callable for progress lines (e.g. `print`, or a no-op).

    Returns:
        A list of `DemoRow`, the original first.
    """
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    name, (x_train, y_train), (x_test, y_test) = datasets.load_demo_data(
        max_train=max_train, max_test=max_test, seed=seed, data_dir=data_dir
    )
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    log(
        f"Data: {name}, {len(x_train):,} train / {len(x_test):,} test "
        f"images of shape {x_train.shape[1:]}"
    )

    baseline = _compile(reference_cnn(x_train.shape[1:], num_classes), 1e-3)
    log(f"Training the reference CNN for {epochs} epoch(s)...")
    start = time.perf_counter()
    baseline.fit(x_train, y_train, batch_size=128, epochs=epochs, verbose=0)
    log(f"  done in {time.perf_counter() - start:.0f} s")

    steps_per_epoch = int(np.ceil(len(x_train) / 128))
    total_steps = steps_per_epoch * finetune_epochs
    calibration = x_train[:200]
    # Sparsity ramps up over the first 70 % of the fine-tuning steps, in
    # about ten increments: on a short run (--quick) a fixed frequency of 50
    # would prune everything at once at the end, with no steps to recover.
    end_step = max(1, int(0.7 * total_steps))
    frequency = max(1, min(50, end_step // 10))

    def fine_tune_pruned(**prune_kwargs):
        pruned = pruning.prune_low_magnitude(baseline, **prune_kwargs)
        _compile(pruned, 1e-4)
        pruned.fit(
            x_train,
            y_train,
            batch_size=128,
            epochs=finetune_epochs,
            verbose=0,
            callbacks=[pruning.UpdatePruningStep()],
        )
        return pruning.strip_pruning(pruned)

    log(
        f"Pruning to {sparsity:.0%} (polynomial schedule) and fine-tuning "
        f"{finetune_epochs} epoch(s)..."
    )
    magnitude = fine_tune_pruned(
        pruning_schedule=pruning.PolynomialDecay(
            0.0,
            sparsity,
            begin_step=0,
            end_step=end_step,
            frequency=frequency,
        )
    )
    log("Pruning to 2:4 sparsity and fine-tuning...")
    two_four = fine_tune_pruned(
        pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=frequency),
        sparsity_m_by_n=(2, 4),
        # The first conv has one input channel: 2:4 needs a multiple of 4.
        layers_to_prune=lambda layer: layer.name != baseline.layers[0].name,
    )

    log(f"Quantization-aware training for {finetune_epochs} epoch(s)...")
    qat = _compile(quantization.quantize_model(baseline), 1e-4)
    qat.fit(x_train, y_train, batch_size=128, epochs=finetune_epochs, verbose=0)

    log(f"Distilling a 4x smaller student for {epochs} epoch(s)...")
    student = student_cnn(x_train.shape[1:], num_classes)
    # A hint on the last hidden layer, not soft logits: in a short schedule
    # the narrow student learns more from the teacher's features (see
    # docs/distillation.md, "Which recipe to use").
    hint = distillation.FeatureDistillation(
        baseline.layers[-2].name, student.layers[-2].name
    )
    distiller = distillation.Distiller(
        student=student,
        teacher=baseline,
        feature_distillations=hint,
        cache_teacher_outputs=True,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        ),
        alpha=1.0,
    )
    distiller.fit(x_train, y_train, batch_size=128, epochs=epochs, verbose=0)

    log("Removing half the channels of every layer and fine-tuning...")
    # Half the channels gone is a new architecture: a high rate decayed to
    # 0 recovers far more than a fine-tune's small constant one.
    steps = -(-len(x_train) // 128) * finetune_epochs
    narrow = _compile(
        pruning.prune_channels(baseline, 0.5),
        keras.optimizers.schedules.CosineDecay(2e-3, steps),
    )
    narrow.fit(
        x_train, y_train, batch_size=128, epochs=finetune_epochs, verbose=0
    )

    log("Factorizing the Dense(128) layer at 25 % rank and fine-tuning...")
    hidden = [
        layer.name
        for layer in baseline.layers
        if isinstance(layer, keras.layers.Dense) and layer.units == 128
    ]
    factorized = _compile(
        lowrank.factorize(baseline, rank_ratio=0.25, layers=hidden), 1e-4
    )
    factorized.fit(
        x_train, y_train, batch_size=128, epochs=finetune_epochs, verbose=0
    )

    log("compress(): int8 LiteRT within one accuracy point...")
    # The budget is checked on images the test table does not use.
    held_out = max(1, len(x_train) // 10)
    budgeted = pipeline.compress(
        baseline,
        (x_train[:-held_out], y_train[:-held_out]),
        (x_train[-held_out:], y_train[-held_out:]),
        target="tflite-int8",
        max_accuracy_drop=0.01,
        epochs=finetune_epochs,
        latency_runs=0,
        verbose=0,
    )
    log(f"  {budgeted.report.message}")

    variants = [
        ("float32", baseline, {}),
        ("float16 weights", baseline, {"mode": "float16"}),
        ("dynamic range int8", baseline, {"mode": "dynamic"}),
        (
            "int8 PTQ",
            baseline,
            {"mode": "int8", "representative_data": calibration},
        ),
        (f"pruned {sparsity:.0%} (sparse)", magnitude, {"sparse": True}),
        ("pruned 2:4 (sparse)", two_four, {"sparse": True}),
        (
            f"pruned {sparsity:.0%} + int8",
            magnitude,
            {
                "mode": "int8",
                "representative_data": calibration,
                "sparse": False,
            },
        ),
        (
            f"pruned {sparsity:.0%} + int8 (sparse)",
            magnitude,
            {
                "mode": "int8",
                "representative_data": calibration,
                "sparse": True,
            },
        ),
        ("QAT int8", qat, {"mode": "int8"}),
        ("distilled student", distiller.student, {}),
        ("channels pruned 50%", narrow, {}),
        ("low-rank dense 25%", factorized, {}),
        ("compress() int8, 1 point", budgeted.model, {"mode": "int8"}),
    ]
    rows = []
    for variant, model, options in variants:
        log(f"Converting and verifying: {variant}")
        path = None
        if output_dir is not None:
            slug = "".join(c if c.isalnum() else "_" for c in variant)
            path = os.path.join(output_dir, f"{slug.strip('_')}.tflite")
        content = convert.to_tflite(model, path=path, verbose=0, **options)
        report = convert.verify(
            model, content, x_test, y_test, latency_runs=latency_runs
        )
        rows.append(
            DemoRow(
                variant=variant,
                keras_accuracy=report.keras_accuracy,
                file_accuracy=report.file_accuracy,
                bytes=report.bytes,
                gzip_bytes=report.gzip_bytes,
                latency_us=(report.latency_s or 0.0) * 1e6,
                sparsity=_kernel_sparsity(model),
            )
        )
    if output_dir is not None:
        _write_json(
            os.path.join(output_dir, "report.json"),
            {"data": name, "rows": [dataclasses.asdict(r) for r in rows]},
        )
    return rows


def _kernel_sparsity(model):
    rows = [
        r for r in analysis.sparsity_report(model).rows if len(r.shape) >= 2
    ]
    params = sum(r.params for r in rows)
    return sum(r.zeros for r in rows) / params if params else 0.0


def _write_json(path, data):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(data, file, indent=2)
    os.replace(temporary, path)
