"""The end-to-end demo: train, compress every way the package can, verify.

`keras-compress demo` runs `run_demo()`: it trains the reference CNN of
`shared/BENCHMARKS.md` on Fashion-MNIST (or an offline fallback), applies
each technique keras_compress has, converts every result to LiteRT, runs
each file in the LiteRT interpreter on the test set and prints one table.
Each variant's accuracy drop is measured against the dense float32 model
with the same training, so that fine-tuning is not mistaken for a gain of
the compression.
"""

import dataclasses
import json
import os
import re
import shutil
import textwrap
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
from keras_compress.core import training
from keras_compress.pipeline.report import describe_drop


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
    training.build_optimizer(model)
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
        reference: `variant` of the row this one's accuracy drop is
            measured against, or `None` if this row is a reference.
        drop: The reference's file accuracy minus this row's (negative:
            more accurate than the reference), or `None` for a reference.
        section: A heading printed above this row (each reference starts
            a group of rows and says what they are compared with).
        note: A line explaining this row, printed under the table.
        file: Path of the `.tflite` file, if it was written; the Keras
            model it came from is beside it, with the suffix `.keras`.
    """

    variant: str
    keras_accuracy: float
    file_accuracy: float
    bytes: int
    gzip_bytes: int
    latency_us: float
    sparsity: float
    reference: str | None = None
    drop: float | None = None
    section: str = ""
    note: str = ""
    file: str | None = None


# What each column means, printed under the table.
LEGEND = (
    "keras acc, file acc: test accuracy of the Keras model, and of its "
    "LiteRT file run in the LiteRT interpreter.",
    "drop: file acc of the group's reference (its first row, the dense "
    "float32 model with the same training) minus this row's: +0.0050 is "
    "half an accuracy point lost, a negative drop is a gain.",
    "bytes, gzip: size of the .tflite file, and after gzip -9 (the zeros of "
    "a pruned model shrink the gzip size; LiteRT's sparse format, marked "
    "(sparse), shrinks the file itself).",
    "gzip x: gzip size relative to the float32 file (0.25x: a quarter).",
    "latency: median time of one single-image run in the LiteRT "
    "interpreter, one thread.",
    "sparsity: fraction of zeros in the weight kernels.",
)


def format_table(rows, width=79):
    """Renders demo rows as a table with a legend under it.

    Rows are printed in order; a row's `section`, if any, is a heading
    above it. "gzip x" is the ratio to the first row's gzip size, "drop"
    the row's `drop` ("ref" for a reference row). The legend explains the
    columns, then each row's `note`, then how to check a written file
    again with `keras-compress verify`.

    Args:
        rows: A list of `DemoRow`, the float32 original first.
        width: Width the legend is wrapped to.

    Returns:
        The text, without a trailing newline.
    """
    base = rows[0]
    header = (
        f"{'variant':<27} {'keras acc':>9} {'file acc':>9} {'drop':>8} "
        f"{'bytes':>10} {'gzip':>10} {'gzip x':>7} {'latency':>10} "
        f"{'sparsity':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.section:
            lines.append(row.section)
        drop = "ref" if row.drop is None else f"{row.drop:+.4f}"
        lines.append(
            f"{row.variant:<27} {row.keras_accuracy:>9.4f} "
            f"{row.file_accuracy:>9.4f} {drop:>8} {row.bytes:>10,} "
            f"{row.gzip_bytes:>10,} {row.gzip_bytes / base.gzip_bytes:>6.2f}x "
            f"{row.latency_us:>8.1f}us {row.sparsity:>8.1%}"
        )
    lines.append("")
    paragraphs = list(LEGEND)
    paragraphs += [f"{row.variant}: {row.note}" for row in rows if row.note]
    for paragraph in paragraphs:
        lines.extend(
            textwrap.wrap(paragraph, width=width, subsequent_indent="    ")
        )
    written = [row for row in rows if row.file]
    if written:
        # Any file will do as the example; the last is compress()'s.
        stem = os.path.splitext(written[-1].file)[0]
        data = os.path.join(os.path.dirname(written[-1].file), "test.npz")
        lines.extend(
            textwrap.wrap(
                "Beside each .tflite file is the Keras model it came from "
                f"(.keras); the test images are in {data}. Check a file "
                "again with:",
                width=width,
            )
        )
        # One line, unwrapped, to copy.
        lines.append(f"    keras-compress verify {stem}.tflite --data {data}")
    return "\n".join(lines)


def file_stem(variant):
    """A file name for a variant: lowercase `[a-z0-9_]`, e.g. `qat_int8`.

    Args:
        variant: The variant's name, e.g. `"pruned 80% (sparse)"`.

    Returns:
        The stem, e.g. `"pruned_80_sparse"`: runs of other characters
        become one underscore, none at either end.
    """
    return re.sub(r"[^a-z0-9]+", "_", variant.lower()).strip("_")


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

    Variants, in two groups, each led by the dense float32 model with the
    same training, against which the group's accuracy drops are measured:

    1. as trained for `epochs`: the float32 original; float16,
       dynamic-range and full-int8 post-training quantization of it; and a
       4x smaller student trained as long, distilled from it.
    2. compressed, then fine-tuned for `finetune_epochs`: the original
       fine-tuned as long, dense (the reference); 80 % magnitude pruning
       and 2:4 pruning, stripped and stored sparse; pruning plus int8;
       quantization-aware training to an integer file; half the channels
       of every layer removed; the Dense(128) layer factorized at a quarter
       of its rank; and `compress()`, which picks per-layer sparsities from
       a sensitivity scan and delivers an int8 file within one accuracy
       point of the original on held-out training images.

    Args:
        epochs: Baseline training epochs.
        finetune_epochs: Fine-tuning epochs of each compressed variant
            (and of the dense reference of the fine-tuned group).
        max_train: Use at most this many training images (None: all).
        max_test: Evaluate on at most this many test images (None: all).
        sparsity: Final sparsity of magnitude pruning.
        seed: Random seed for data subsampling and training.
        latency_runs: Single-image invocations timed per file.
        output_dir: If given, written there (atomically): each variant's
            `.tflite` file and its Keras model beside it (same name,
            `.keras`), the test images as `test.npz` (arrays `x`, `y`) and
            `report.json`, so that `keras-compress verify` can check any
            file again.
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
    # The default recipe: the teacher's class ranking and a hint on the
    # features its classifier reads (docs/distillation.md).
    distiller = distillation.Distiller(
        student=student, teacher=baseline, cache_teacher_outputs=True
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        ),
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
    max_drop = 0.01
    budgeted = pipeline.compress(
        baseline,
        (x_train[:-held_out], y_train[:-held_out]),
        (x_train[-held_out:], y_train[-held_out:]),
        target="tflite-int8",
        max_accuracy_drop=max_drop,
        epochs=finetune_epochs,
        latency_runs=0,
        verbose=0,
    )
    # compress() measures its drop on its own validation images; the table
    # measures every file on the test set. Say which is which.
    own_drop = budgeted.report.final.accuracy_drop
    log(
        f"  On its {held_out:,} held-out training images the file "
        f"{describe_drop(own_drop)} against float32 (budget "
        f"{max_drop:.4f}: {'met' if budgeted.budget_met else 'NOT met'}); "
        "the table measures it on the test set."
    )

    # Trained last, so that the variants above see the same random
    # numbers as before this reference existed.
    log(
        f"Fine-tuning the dense float32 model {finetune_epochs} epoch(s), "
        "the reference of the fine-tuned variants..."
    )
    tuned = keras.models.clone_model(baseline)
    tuned.set_weights(baseline.get_weights())
    _compile(tuned, 1e-4)
    tuned.fit(
        x_train, y_train, batch_size=128, epochs=finetune_epochs, verbose=0
    )

    int8 = {"mode": "int8", "representative_data": calibration}
    trained = (
        f"-- As trained ({epochs} epoch(s)), then converted; the student "
        "trained as long. Drop vs float32:"
    )
    fine_tuned = (
        f"-- Compressed, then fine-tuned {finetune_epochs} epoch(s). Drop "
        f"vs float32 fine-tuned {finetune_epochs} epoch(s) the same way, "
        "dense:"
    )
    variants = [
        # (variant, model, to_tflite options, reference, section)
        ("float32", baseline, {}, None, trained),
        ("float16 weights", baseline, {"mode": "float16"}, "float32", ""),
        ("dynamic range int8", baseline, {"mode": "dynamic"}, "float32", ""),
        ("int8 PTQ", baseline, int8, "float32", ""),
        ("distilled student", distiller.student, {}, "float32", ""),
        ("float32 fine-tuned", tuned, {}, None, fine_tuned),
        (
            f"pruned {sparsity:.0%} (sparse)",
            magnitude,
            {"sparse": True},
            "float32 fine-tuned",
            "",
        ),
        (
            "pruned 2:4 (sparse)",
            two_four,
            {"sparse": True},
            "float32 fine-tuned",
            "",
        ),
        (
            f"pruned {sparsity:.0%} + int8",
            magnitude,
            {**int8, "sparse": False},
            "float32 fine-tuned",
            "",
        ),
        (
            f"pruned {sparsity:.0%} + int8 (sparse)",
            magnitude,
            {**int8, "sparse": True},
            "float32 fine-tuned",
            "",
        ),
        ("QAT int8", qat, {"mode": "int8"}, "float32 fine-tuned", ""),
        ("channels pruned 50%", narrow, {}, "float32 fine-tuned", ""),
        ("low-rank dense 25%", factorized, {}, "float32 fine-tuned", ""),
        (
            "compress() int8, 1 point",
            budgeted.model,
            {"mode": "int8"},
            "float32 fine-tuned",
            "",
        ),
    ]
    if output_dir is not None:
        _save_npz(os.path.join(output_dir, "test.npz"), x=x_test, y=y_test)
    rows = {}
    saved = {}  # id(model) -> its first .keras file, copied for the others
    for variant, model, options, reference, section in variants:
        log(f"Converting and verifying: {variant}")
        path = None
        if output_dir is not None:
            path = os.path.join(output_dir, f"{file_stem(variant)}.tflite")
            keras_path = os.path.splitext(path)[0] + ".keras"
            _save_keras(model, keras_path, saved.get(id(model)))
            saved.setdefault(id(model), keras_path)
        content = convert.to_tflite(model, path=path, verbose=0, **options)
        report = convert.verify(
            model, content, x_test, y_test, latency_runs=latency_runs
        )
        rows[variant] = DemoRow(
            variant=variant,
            keras_accuracy=report.keras_accuracy,
            file_accuracy=report.file_accuracy,
            bytes=report.bytes,
            gzip_bytes=report.gzip_bytes,
            latency_us=(report.latency_s or 0.0) * 1e6,
            sparsity=_kernel_sparsity(model),
            reference=reference,
            drop=(
                None
                if reference is None
                else rows[reference].file_accuracy - report.file_accuracy
            ),
            section=section,
            file=path,
        )
    compressed = rows["compress() int8, 1 point"]
    rows[compressed.variant] = dataclasses.replace(
        compressed,
        note=_compress_note(
            budgeted,
            held_out,
            finetune_epochs,
            test_drop=rows["float32"].file_accuracy - compressed.file_accuracy,
            table_drop=compressed.drop,
        ),
    )
    rows = list(rows.values())
    if output_dir is not None:
        _write_json(
            os.path.join(output_dir, "report.json"),
            {
                "data": name,
                "train_images": len(x_train),
                "test_images": len(x_test),
                "epochs": epochs,
                "finetune_epochs": finetune_epochs,
                "legend": list(LEGEND),
                "rows": [dataclasses.asdict(r) for r in rows],
            },
        )
    return rows


# How the compress() row's note names the steps of its recipe.
_STEP_WORDS = {
    "prune": "pruned each layer as far as its sensitivity scan allowed",
    "prune_channels": "removed channels",
    "cluster": "clustered the weights",
    "quantize": "trained quantization-aware",
}


def _compress_note(result, held_out, epochs, test_drop, table_drop):
    """What compress() was asked, what it did, and its drop on each set."""
    report = result.report
    final = report.final
    steps = report.recipes[final.attempt - 1]["steps"]
    done = ", then ".join(_STEP_WORDS.get(s["step"], s["step"]) for s in steps)
    return (
        f"kc.compress(float32, target='{report.target}', "
        f"max_accuracy_drop={report.max_accuracy_drop}) "
        f"{done or 'converted float32 as is'} ({epochs} epoch(s) per step, "
        f"distilling from float32); it delivered try {final.attempt} (each "
        "try compresses less). It checks its budget against float32 on "
        f"{held_out:,} training images held out from fine-tuning: there the "
        f"file {describe_drop(final.accuracy_drop)} (budget "
        f"{'met' if result.budget_met else 'NOT met'}). On the test set it "
        f"{describe_drop(test_drop)} against float32 and "
        f"{describe_drop(table_drop)} against float32 fine-tuned (the drop "
        "column)."
    )


def _kernel_sparsity(model):
    rows = [
        r for r in analysis.sparsity_report(model).rows if len(r.shape) >= 2
    ]
    params = sum(r.params for r in rows)
    return sum(r.zeros for r in rows) / params if params else 0.0


def _save_keras(model, path, copy_of=None):
    """Saves `model` to `path` atomically, or copies the file `copy_of`."""
    # model.save() insists on the .keras suffix, also for the temporary.
    temporary = f"{path[: -len('.keras')]}.tmp-{os.getpid()}.keras"
    if copy_of is None:
        model.save(temporary)
    else:
        shutil.copyfile(copy_of, temporary)
    os.replace(temporary, path)


def _save_npz(path, **arrays):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as file:
        np.savez_compressed(file, **arrays)
    os.replace(temporary, path)


def _write_json(path, data):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(data, file, indent=2)
    os.replace(temporary, path)
