"""`compress()`: from a trained model to a verified file, under a budget."""

import dataclasses
import json
import math
import os
import time
import warnings

import keras
import numpy as np

from keras_compress import analysis
from keras_compress import convert
from keras_compress import data_checks
from keras_compress import rewrite
from keras_compress.analysis import sensitivity as sensitivity_lib
from keras_compress.convert import _files
from keras_compress.distillation import distiller as distiller_lib
from keras_compress.pipeline import budgets as budgets_lib
from keras_compress.pipeline import recipe as recipe_lib
from keras_compress.pipeline import report as report_lib
from keras_compress.pipeline import run_folder
from keras_compress.pipeline import search as search_lib
from keras_compress.pipeline import steps as steps_lib
from keras_compress.pipeline import targets as targets_lib

# When the recipe is built from the budget, each try scales the per-layer
# sparsities from the scan by the next factor: the first try compresses
# most, later ones back off, the last prunes nothing.
BACK_OFF_FACTORS = (1.0, 0.75, 0.5, 0.0)
# Sparsities below this are not worth a pruning step.
MIN_SPARSITY = 0.1
CALIBRATION_SAMPLES = 200


@dataclasses.dataclass(frozen=True)
class CompressionResult:
    """What `compress()` returns.

    Attributes:
        model: The Keras model of the delivered file (e.g. the QAT model).
        content: The delivered file's bytes.
        path: Where the file was written, or `None` without `output`.
        report: A `CompressionReport` with every stage's figures.
        budget_met: Whether the delivered file is within the budget.
    """

    model: object
    content: bytes
    path: object
    report: object
    budget_met: bool


def compress(
    model,
    train_data,
    val_data,
    *,
    target="tflite-int8",
    max_accuracy_drop=0.01,
    max_bytes=None,
    max_latency=None,
    recipe=None,
    teacher=None,
    distill=True,
    epochs=2,
    output=None,
    resume=False,
    overwrite=False,
    seed=None,
    loss=None,
    batch_size=128,
    strategy=None,
    sparsities=sensitivity_lib.DEFAULT_SPARSITIES,
    scan_tolerance=None,
    latency_runs=100,
    verbose=1,
):
    """Compresses a trained classifier into a verified file within budgets.

    With `recipe=None` and an accuracy budget alone, the recipe is built
    to make the file small under gzip:

    1. a **sensitivity scan** prunes one layer at a time
       (`kc.analysis.pruning_sensitivity`) and gives each layer the highest
       sparsity that costs at most `scan_tolerance` on its own;
    2. the model is **pruned** to those sparsities while fine-tuning for
       `epochs`, distilling from the original model;
    3. for an int8 target, **quantization-aware training** follows for
       `epochs` (zeros kept);
    4. the result is **converted** to `target` and the file is **verified**
       on `val_data`. If its accuracy drop exceeds `max_accuracy_drop`, the
       pipeline **backs off** (sparsities scaled by 0.75, 0.5, then no
       pruning) and tries again from the original model.

    With `max_bytes` and/or `max_latency`, the recipe is built to fit
    them instead (`keras_compress.pipeline.search`): channel and precision
    sensitivity scans, then a greedy choice per layer of the fraction of
    channels to remove and of 4-bit weights (int8 and dynamic targets),
    checked on measured candidate files; each plan that fits is
    fine-tuned (channel pruning with distillation, then QAT, or GPTQ for
    4-bit layers) and verified, the most promising first. Sparsity and
    clustering are not searched then: neither makes a LiteRT file faster,
    clustering leaves its raw bytes as they are, and LiteRT's sparse
    format (the one way zeros shrink them) does not combine with 4-bit
    weights.

    Every budget is checked on the converted file, not estimated. If no
    try meets them all, the closest file is delivered (the most accurate
    one within the size and latency budgets, else the one nearest to
    them), and a warning (and `result.budget_met == False`) names the
    budget that failed.

    Args:
        model: A trained, built Keras classifier (one output of class
            scores or logits). It is not changed.
        train_data: `(x, y)` arrays (integer labels) or a batched
            `tf.data.Dataset` of `(x, y)`.
        val_data: `(x, y)` arrays or a `tf.data.Dataset`; every file is
            verified on it.
        target: `"tflite-int8"`, `"tflite-integer-only"` (int8 input and
            output, no op in float: for NPUs and microcontrollers; a model
            whose file would keep one is refused before training),
            `"tflite-float16"`, `"tflite-dynamic"`, `"tflite-float32"`,
            `"onnx"` or `"onnx-float16"`.
        max_accuracy_drop: Largest accepted accuracy loss of the file,
            against the original model (0.01 is one point).
        max_bytes: Largest file size: a fraction in (0, 1] of the
            original's float32 file of the same format (`0.12`), an
            integer number of bytes, or a string such as `"60KB"` or
            `"1.5MiB"`. `None`: no size budget.
        max_latency: Largest single-sample latency of the file (median
            of `latency_runs` single-thread runs on this machine, with
            LiteRT or ONNX Runtime): a fraction in (0, 1] of the float32
            file's (`0.25`) or a string such as `"10ms"` or `"250us"`.
            `None`: no latency budget.
        recipe: `None` (built from the budget), a `Recipe`, a list of
            steps, a recipe config dict, or a path to a JSON/YAML recipe.
            A given recipe runs once, without back-off.
        teacher: Model to distill from during fine-tuning; defaults to the
            original model when `distill` is True.
        distill: `True` (default) to fine-tune through a `Distiller` with
            its default recipe (docs/distillation.md), `False` to train on
            the labels alone, or a dict of keras.io `Distiller.compile`
            arguments (`{"alpha": 0.1, "temperature": 3}`) for the keras.io
            soft-target loss instead. The report's `distillation` says
            which recipe ran.
        epochs: Fine-tuning epochs of each step of a built recipe.
        output: Folder for the delivered file (`model.tflite` or
            `model.onnx`), `report.md/.html/.json`, plots, `recipe.json`
            and each stage's `.keras` model under `stages/`. Written
            atomically; created if missing.
        resume: With `output`, reuse stage models saved there by an
            earlier run (an interrupted one, say) instead of training them
            again. Only a run of the same model, data, recipe and options
            is resumed (`output/run.json` holds their fingerprint); any
            other is refused with what differs.
        overwrite: Replace the results of an earlier run in `output`. By
            default a folder that holds them is refused before any work.
        seed: Seeds Python, NumPy and the backend before each training
            step (from `seed`, the try and the step), so that a resumed
            run ends with the same file as an uninterrupted one. `None`
            leaves the random state alone.
        loss: Training loss; defaults to the compiled loss of `model`.
        batch_size: Batch size for array data.
        strategy: A `tf.distribute.Strategy` to train every step under
            (e.g. `MirroredStrategy`, `MultiWorkerMirroredStrategy`). With
            several workers, every worker makes the same `compress()` call
            with the same `val_data` (its decisions must agree) and its own
            `output` folder; the chief's is the real one.
        sparsities: Sparsities the sensitivity scan tries.
        scan_tolerance: Accuracy a layer may lose in the scan (before
            fine-tuning); defaults to `max(3 * max_accuracy_drop, 0.01)`.
        latency_runs: Timed single-sample runs per file (0 skips).
        verbose: 0 is quiet; 1 prints progress and Keras progress bars.

    Returns:
        A `CompressionResult`.

    Raises:
        ValueError: For bad arguments or data, before any training.

    Example:

    ```python
    result = kc.compress(model, (x_train, y_train), (x_val, y_val),
                         target="tflite-int8", max_accuracy_drop=0.01,
                         output="out/")
    print(result.report.to_markdown())
    ```
    """
    start = time.perf_counter()
    targets_lib.check_target(target)
    if (
        not isinstance(max_accuracy_drop, (int, float))
        or isinstance(max_accuracy_drop, bool)
        or not 0 <= max_accuracy_drop < 1
    ):
        raise ValueError(
            "`max_accuracy_drop` must be a number in [0, 1) (0.01 is one "
            f"accuracy point); received {max_accuracy_drop!r}."
        )
    budgets = budgets_lib.Budgets(
        float(max_accuracy_drop),
        budgets_lib.parse_bytes(max_bytes),
        budgets_lib.parse_latency(max_latency),
    )
    if budgets.max_latency is not None and not latency_runs:
        raise ValueError(
            "`max_latency` is checked on each file's measured latency, but "
            f"`latency_runs`={latency_runs!r} measures none: pass "
            "latency_runs >= 1 (e.g. 100)."
        )
    steps_lib.check_epochs(epochs)
    if resume and output is None:
        raise ValueError(
            "`resume=True` needs `output`, the earlier run's folder."
        )
    rewrite.check_built(model)
    x_val, y_val = _arrays(val_data, "val_data", model)
    _check_inputs(model, x_val, "val_data")
    train_data, calibration, num_train = _training_data(
        train_data, batch_size, model
    )
    loss = _loss(model, loss)
    recipe = _as_recipe(recipe)
    # Refuse what a step cannot do before anything trains.
    if recipe is not None:
        targets_lib.check_ptq_recipe(recipe, target)
        for step in recipe.steps:
            step.check(model)
    elif targets_lib.is_integer_target(target):
        steps_lib.QuantizeAware().check(model)  # the built recipes end in QAT
    if target == "tflite-integer-only" and (
        recipe is None or "quantize" in [step.name for step in recipe.steps]
    ):
        targets_lib.check_integer_only(model, x_val)
    if seed is not None and (
        not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
    ):
        raise ValueError(f"`seed` must be an integer or None; got {seed!r}.")
    if overwrite and resume:
        raise ValueError(
            "`resume=True` continues the run in `output` and "
            "`overwrite=True` replaces it: pass one of them."
        )
    distill_arguments = _distill_arguments(distill)
    if teacher is None and distill:
        teacher = model
    log = print if verbose else (lambda *args: None)

    if output is not None:
        # Before any training: a folder that cannot be written, or whose
        # results would be lost or mixed with this run's, is refused now.
        options = dict(
            target=target,
            max_accuracy_drop=float(max_accuracy_drop),
            max_bytes=budgets.as_dict()["max_bytes"],
            max_latency=budgets.as_dict()["max_latency"],
            epochs=epochs,
            distill=dict(distill) if distill_arguments else bool(distill),
            batch_size=batch_size,
            sparsities=[float(s) for s in sparsities],
            scan_tolerance=scan_tolerance,
            seed=None if seed is None else int(seed),
        )
        run_folder.prepare(
            output,
            run_folder.fingerprint(
                model,
                train_data,
                (x_val, y_val),
                None if recipe is None else recipe.get_config(),
                options,
                teacher=teacher,
                loss=loss,
            ),
            resume=resume,
            overwrite=overwrite,
        )
    context = steps_lib.TrainingContext(
        train_data=train_data,
        loss=loss,
        batch_size=batch_size,
        steps_per_epoch=max(1, math.ceil(num_train / batch_size))
        if num_train
        else _dataset_steps(train_data),
        teacher=teacher if distill else None,
        **distill_arguments,
        strategy=strategy,
        verbose="auto" if verbose else 0,
    )

    def measure(stage, attempt, stage_model, stage_target, seconds, ptq=None):
        content = targets_lib.convert_to_target(
            stage_model, stage_target, calibration, ptq
        )
        check = convert.verify(
            stage_model, content, x_val, y_val, latency_runs=latency_runs
        )
        reference = original.file_accuracy if original else check.file_accuracy
        result = report_lib.StageResult(
            stage=stage,
            attempt=attempt,
            target=stage_target,
            keras_accuracy=check.keras_accuracy,
            file_accuracy=check.file_accuracy,
            accuracy_drop=reference - check.file_accuracy,
            bytes=check.bytes,
            gzip_bytes=check.gzip_bytes,
            latency_us=(check.latency_s or 0.0) * 1e6,
            # Trainable ones: QAT adds masks and ranges as variables.
            params=sum(
                int(np.prod(w.shape)) for w in stage_model.trainable_weights
            ),
            sparsity=analysis.sparsity_report(stage_model).total_sparsity,
            seconds=seconds,
        )
        log(
            f"  {stage} -> {stage_target}: file accuracy "
            f"{result.file_accuracy:.4f} (drop {result.accuracy_drop:+.4f}), "
            f"{result.gzip_bytes:,} gzip bytes"
        )
        return result, content

    log(f"Measuring the original model ({len(x_val):,} validation samples)")
    original = None
    original, _ = measure(
        "original", 0, model, targets_lib.dense_reference_target(target), 0.0
    )

    limits = budgets.limits(original)
    for line in budgets.describe(original):
        log(f"Budget: {line}")
    scan = searched = longer = None
    if recipe is None and budgets.constrains_cost:
        searched = _search(
            model,
            target,
            limits,
            calibration,
            (x_val, y_val),
            output,
            resume,
            latency_runs,
            log,
            verbose,
        )
        for note in searched.notes:
            log(f"  {note}")
        recipes = [plan.recipe(target, epochs) for plan in searched.plans]
        longer = searched.plans[0].recipe(target, 2 * epochs)
        if searched.fits and len(recipes) < search_lib.MAX_TRIES:
            if longer not in recipes:
                # Back-off when few plans fit: the best, trained twice as
                # long (a fitting plan that removes less does not exist,
                # or the search would have found it).
                recipes.append(longer)
    elif recipe is None:
        scan = _scan(
            model, x_val, y_val, sparsities, output, resume, log, verbose
        )
        tolerance = (
            scan_tolerance
            if scan_tolerance is not None
            else max(3 * max_accuracy_drop, 0.01)
        )
        recipes = _budget_recipes(scan.sparsity_plan(tolerance), target, epochs)
    else:
        recipes = [recipe]

    stages, finals = [], []
    for attempt, attempt_recipe in enumerate(recipes, start=1):
        if (
            attempt_recipe is longer
            and budgets.check(stages[finals[0][0]], original)["accuracy_drop"][
                "held"
            ]
        ):
            # Only size or latency failed: training longer changes neither.
            break
        log(f"Try {attempt}/{len(recipes)}: {attempt_recipe!r}")
        current = model
        final = None
        for index, step in enumerate(attempt_recipe.steps):
            step_start = time.perf_counter()
            if seed is not None:
                # Each step's randomness depends on where it is in the run,
                # not on what ran before it in this process.
                keras.utils.set_random_seed(int(seed) + 1000 * attempt + index)
            current = _run_step(
                step, current, context, output, attempt, index, resume, log
            )
            final = measure(
                step.describe(),
                attempt,
                current,
                target,
                time.perf_counter() - step_start,
                ptq=step if step.name == "ptq" else None,
            )
            stages.append(final[0])
        if final is None:  # An empty recipe: the original, converted.
            final = measure("convert", attempt, model, target, 0.0)
            stages.append(final[0])
        finals.append((len(stages) - 1, current, final[1]))
        if _all_held(budgets.check(final[0], original)):
            break

    chosen, final_model, content = _deliverable(
        finals, stages, budgets, original
    )
    held = budgets.check(stages[chosen], original)
    budget_met = _all_held(held)
    message = _message(target, held, budget_met, searched)
    if not budget_met:
        warnings.warn(message, stacklevel=2)
    report = report_lib.CompressionReport(
        target=target,
        max_accuracy_drop=float(max_accuracy_drop),
        original=original,
        stages=tuple(stages),
        chosen=chosen,
        budget_met=budget_met,
        message=message,
        wall_time_s=time.perf_counter() - start,
        recipes=tuple(r.get_config() for r in recipes[: len(finals)]),
        sensitivity=scan,
        budgets=budgets.as_dict(),
        budget_checks=held,
        search=None if searched is None else searched.as_dict(),
        search_scans=(
            ()
            if searched is None
            else tuple(
                s
                for s in (searched.channel_scan, searched.bits_scan)
                if s is not None
            )
        ),
        distillation=context.distillation_recipe,
    )
    path = None
    if output is not None:
        path = os.path.join(output, "model" + targets_lib.file_suffix(target))
        _files.write_atomically(path, content)
        # The recipe of the delivered file (not always the last one tried).
        delivered = report.recipes[stages[chosen].attempt - 1]
        recipe_text = json.dumps(delivered, indent=2) + "\n"
        _files.write_atomically(
            os.path.join(output, "recipe.json"), recipe_text.encode("utf-8")
        )
        report.write(output)
    log(message)
    return CompressionResult(
        model=final_model,
        content=content,
        path=path,
        report=report,
        budget_met=budget_met,
    )


def _all_held(checks):
    return all(check["held"] for check in checks.values())


def _deliverable(finals, stages, budgets, original):
    """The first try within every budget; else the closest one.

    Closest: the most accurate try within the size and latency budgets,
    or, when no try is, the one least over them.
    """
    checks = [budgets.check(stages[f[0]], original) for f in finals]
    for final, held in zip(finals, checks):
        if _all_held(held):
            return final

    def cost_excess(held):
        return sum(
            max(0.0, check["value"] / check["limit"] - 1.0)
            for name, check in held.items()
            if name != "accuracy_drop"
        )

    index = min(
        range(len(finals)),
        key=lambda i: (
            cost_excess(checks[i]),
            -stages[finals[i][0]].file_accuracy,
        ),
    )
    return finals[index]


def _message(target, held, budget_met, searched):
    """One paragraph: which budgets held, and what to do if one failed."""
    figures = "; ".join(
        report_lib.describe_check(name, check) for name, check in held.items()
    )
    if budget_met:
        return f"Budget met: the {target} file: {figures}."
    failed = [n for n, check in held.items() if not check["held"]]
    advice = []
    if "accuracy_drop" in failed:
        advice.append(
            "allow a larger max_accuracy_drop, train longer (epochs) or use "
            "a lighter recipe"
        )
    if "bytes" in failed or "latency_us" in failed:
        advice.append("allow a larger size or latency budget")
        if searched is not None and not searched.fits:
            advice.append(
                "no plan of the search fits them even untrained (see the "
                "report's candidates)"
            )
    return (
        f"Budget NOT met ({', '.join(map(report_lib.budget_name, failed))}): "
        f"no try met every budget; delivered the closest file: {figures}. "
        "To meet it, " + "; ".join(advice) + "."
    )


def _distill_arguments(distill):
    """The keras.io `Distiller.compile` arguments `distill` asks for."""
    if isinstance(distill, bool):
        return {}
    if not isinstance(distill, dict) or not distill:
        raise ValueError(
            "`distill` must be True (the Distiller's default recipe), False "
            "(labels only) or a dict of keras.io arguments such as "
            f"{{'alpha': 0.1, 'temperature': 3}}; received distill={distill!r}."
        )
    unknown = sorted(set(distill) - {"alpha", "temperature"})
    if unknown:
        raise ValueError(
            f"`distill` has unknown keys {unknown}: only 'alpha' and "
            "'temperature' (the keras.io Distiller.compile arguments) are "
            "accepted."
        )
    # The Distiller's own checks, before any training.
    probe = {"alpha": 0.1, "temperature": 3.0, **distill}
    distiller_lib.check_keras_io_arguments(**probe, prefix="distill")
    return dict(distill)


def _search(
    model,
    target,
    limits,
    calibration,
    val_data,
    output,
    resume,
    latency_runs,
    log,
    verbose,
):
    x_val, y_val = val_data

    def channel_scan():
        return _cached_scan(
            output,
            "sensitivity_channels.json",
            resume,
            log,
            "removing channels of one layer at a time",
            lambda: sensitivity_lib.channel_sensitivity(
                model,
                x_val,
                y_val,
                search_lib.CHANNEL_RATIOS,
                log=log,
                verbose=verbose,
            ),
        )

    def bits_scan():
        return _cached_scan(
            output,
            "sensitivity_bits.json",
            resume,
            log,
            f"{search_lib.LOW_BITS}-bit weights, one layer at a time",
            lambda: sensitivity_lib.precision_sensitivity(
                model,
                x_val,
                y_val,
                (search_lib.LOW_BITS,),
                log=log,
                verbose=verbose,
            ),
        )

    def measure(plan):
        return search_lib.measure_untrained(
            model, plan, target, calibration, x_val[:32], latency_runs or 1
        )

    def layer_latency():
        log("  each layer's latency at 8 and 4 bits (operators timed alone)")
        return search_lib.measure_layer_latency(
            model, target, calibration, x_val[:1], latency_runs or 1
        )

    log("Budget search: channels and precision per layer")
    result = search_lib.search(
        model,
        target,
        limits,
        measure,
        x_val,
        y_val,
        channel_scan,
        bits_scan,
        log,
        layer_latency,
    )
    for index, plan in enumerate(result.plans, start=1):
        log(f"  plan {index}: {plan.describe()}")
    return result


def _budget_recipes(plan, target, epochs):
    """The recipes to try, most compressed first, duplicates dropped."""
    recipes = []
    for factor in BACK_OFF_FACTORS:
        sparsity = {
            layer: round(value * factor, 2)
            for layer, value in plan.items()
            if value * factor >= MIN_SPARSITY
        }
        steps = [steps_lib.Prune(sparsity, epochs=epochs)] if sparsity else []
        if targets_lib.is_integer_target(target):
            steps.append(steps_lib.QuantizeAware(epochs=epochs))
        candidate = recipe_lib.Recipe(steps)
        if candidate not in recipes:
            recipes.append(candidate)
    return recipes


def _scan(model, x, y, sparsities, output, resume, log, verbose):
    return _cached_scan(
        output,
        "sensitivity.json",
        resume,
        log,
        "pruning one layer at a time",
        lambda: sensitivity_lib.pruning_sensitivity(
            model, x, y, sparsities=sparsities, log=log, verbose=verbose
        ),
    )


def _cached_scan(output, name, resume, log, what, run):
    """A sensitivity scan, read back from `output/name` when resuming.

    Otherwise `run()` scans and the report is written there atomically,
    for a later `resume=True`.
    """
    path = None if output is None else os.path.join(output, name)
    if resume and path and os.path.exists(path):
        log(f"Sensitivity scan: reusing {path}")
        with open(path) as f:
            return sensitivity_lib.SensitivityReport.from_dict(json.load(f))
    log(f"Sensitivity scan: {what}")
    report = run()
    if path:
        text = json.dumps(report.as_dict(), indent=2) + "\n"
        _files.write_atomically(path, text.encode("utf-8"))
    return report


def _run_step(step, model, context, output, attempt, index, resume, log):
    if not step.trains:
        log(f"  {step.describe()}")
        return step.apply(model, context)
    path = None
    if output is not None:
        path = os.path.join(
            output,
            run_folder.STAGES,
            f"try{attempt}_{index + 1}_{step.name}.keras",
        )
    if resume and path and os.path.exists(path):
        log(f"  {step.describe()}: resumed from {path}")
        with context.scope():
            return keras.saving.load_model(path)
    log(f"  {step.describe()}")
    result = step.apply(model, context)
    if path:
        # Keras picks the format from the suffix: save beside, then rename.
        tmp_path = path[: -len(".keras")] + ".tmp.keras"
        try:
            result.save(tmp_path)
            os.replace(tmp_path, path)
        except BaseException:
            # An interrupt or a full disk leaves no half-written stage.
            if os.path.exists(tmp_path):
                os.remove(tmp_path)
            raise
    return result


def _as_recipe(recipe):
    if recipe is None or isinstance(recipe, recipe_lib.Recipe):
        return recipe
    if isinstance(recipe, (list, tuple)):
        return recipe_lib.Recipe(recipe)
    if isinstance(recipe, dict):
        return recipe_lib.Recipe.from_config(recipe)
    if isinstance(recipe, (str, os.PathLike)):
        return recipe_lib.load_recipe(os.fspath(recipe))
    raise ValueError(
        "`recipe` must be None, a Recipe, a list of steps, a config dict or "
        f"a path to a JSON/YAML file; received {type(recipe).__name__}."
    )


def _arrays(data, argument, model):
    """`(x, y)` NumPy arrays from a tuple or a dataset of `(x, y)`."""
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for element in data.as_numpy_iterator():
            if not isinstance(element, tuple) or len(element) != 2:
                raise ValueError(
                    f"`{argument}` must yield `(x, y)` pairs; got an element "
                    f"of type {type(element).__name__}."
                )
            xs.append(element[0])
            ys.append(element[1])
        if not xs:
            raise ValueError(f"`{argument}` is empty: it yielded no batch.")
        batched = np.ndim(ys[0]) >= 1
        join = np.concatenate if batched else np.stack
        data = (join(xs), join(ys))
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"`{argument}` must be `(x, y)` arrays or a tf.data.Dataset of "
            f"`(x, y)`; received {type(data).__name__}."
        )
    x = np.asarray(data[0])
    data_checks.check_inputs(x, f"{argument}[0]")
    y = data_checks.check_labels(
        data[1], f"{argument}[1]", len(x), data_checks.num_classes(model)
    )
    return x, y


def _input_shape(model):
    """The shape of one sample of the model's (first) input, or None."""
    inputs = getattr(model, "inputs", None)
    if inputs:
        return tuple(inputs[0].shape)[1:]
    # A subclassed model has no `inputs`; its build config has the shape.
    shape = (model.get_build_config() or {}).get("input_shape")
    if shape and isinstance(shape[0], (int, type(None))):
        return tuple(shape)[1:]
    return None


def _check_inputs(model, x, argument):
    expected = _input_shape(model)
    if expected is None:
        return
    actual = tuple(x.shape[1:])
    if len(actual) != len(expected) or any(
        e is not None and e != a for e, a in zip(expected, actual)
    ):
        raise ValueError(
            f"`{argument}` does not match the model's input: samples of "
            f"shape {actual}, but '{model.name}' takes {expected} (None: any)."
        )


def _training_data(train_data, batch_size, model):
    """`(data for fit, calibration samples, number of samples or None)`."""
    import tensorflow as tf

    if isinstance(train_data, tf.data.Dataset):
        calibration, labels = [], []
        for x, y in train_data.take(CALIBRATION_SAMPLES).as_numpy_iterator():
            calibration.append(x)
            labels.append(np.atleast_1d(y))
            if sum(len(c) for c in calibration) >= CALIBRATION_SAMPLES:
                break
        if not calibration:
            raise ValueError("`train_data` is empty: it yielded no batch.")
        # The first batches stand for the rest (reading all costs an epoch).
        calibration = np.concatenate(calibration)[:CALIBRATION_SAMPLES]
        _check_inputs(model, calibration, "train_data")
        data_checks.check_inputs(calibration, "train_data")
        data_checks.check_labels(
            np.concatenate(labels),
            "train_data",
            num_classes=data_checks.num_classes(model),
        )
        return train_data, calibration, None
    x, y = _arrays(train_data, "train_data", model)
    _check_inputs(model, x, "train_data")
    return (x, y), x[:CALIBRATION_SAMPLES], len(x)


def _dataset_steps(dataset):
    import tensorflow as tf

    steps = int(dataset.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "`train_data` is an infinite dataset; give it a length (e.g. "
            "`dataset.take(n)`) so each step trains a known number of epochs."
        )
    if steps == tf.data.UNKNOWN_CARDINALITY:
        steps = sum(1 for _ in dataset)
    return max(1, steps)


def _loss(model, loss):
    if loss is not None:
        return keras.losses.get(loss)
    compiled = getattr(model, "loss", None)
    if compiled is None:
        raise ValueError(
            f"'{model.name}' is not compiled, so compress() does not know its "
            "training loss: pass `loss=` (e.g. "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True))."
        )
    return keras.losses.get(compiled)
