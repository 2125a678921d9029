"""compress(): budgets checked on the converted file, reports, resume."""

import contextlib
import io
import json
import os
import warnings

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_compress import analysis
from keras_compress import convert
from keras_compress import pipeline
from keras_compress.convert.verify import float_ops


def _file_accuracy(content, x, y):
    if content[4:8] == b"TFL3":
        outputs = convert.run_tflite(content, x)
    else:
        outputs = convert.run_onnx(content, x)
    return float(np.mean(np.asarray(outputs).argmax(axis=1) == y))


def test_recipe_run_meets_budget_on_the_int8_file(task, tmp_path):
    model, train, val = task
    weights = [w.copy() for w in model.get_weights()]
    recipe = pipeline.Recipe(
        [pipeline.Prune(0.5, epochs=2), pipeline.QuantizeAware(epochs=1)]
    )
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-int8",
        max_accuracy_drop=0.05,
        recipe=recipe,
        output=str(tmp_path),
        latency_runs=5,
        verbose=0,
    )
    report = result.report
    final = report.final
    # The budget is judged on the file itself: run it again here.
    with open(result.path, "rb") as f:
        content = f.read()
    assert content == result.content
    accuracy = _file_accuracy(content, *val)
    assert accuracy == pytest.approx(final.file_accuracy)
    assert report.original.file_accuracy - accuracy <= 0.05
    assert result.budget_met and report.budget_met
    # Each step is a row; the QAT file is integer and keeps the zeros.
    steps = [s.stage.split("(")[0] for s in report.stages]
    assert steps == ["prune", "quantize"]
    assert convert.verify(result.model, content, val[0][:32]).float_ops == ()
    assert final.gzip_bytes < 0.5 * report.original.gzip_bytes
    assert final.sparsity > 0.4
    # The user's model is untouched.
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # The report files hold the measured figures.
    markdown = (tmp_path / "report.md").read_text()
    assert f"{final.file_accuracy:.4f}" in markdown
    assert "Budget met" in markdown
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["budget_met"] is True
    assert data["stages"][-1]["gzip_bytes"] == final.gzip_bytes
    assert f"{final.gzip_bytes:,}" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "stages.png").read_bytes()[:4] == b"\x89PNG"
    # The fine-tuning distilled with the Distiller's default recipe, and
    # the report says so: the loss, and the hint between the layers that
    # feed the classifier (fc2 in the teacher, its wrapped copy in the
    # student).
    distilled = data["distillation"]
    assert distilled["name"] == "default"
    assert distilled["distillation_loss"] == "CorrelationDistillation"
    teacher_side, student_side = distilled["automatic_hint"].split("->")
    assert teacher_side == "fc2" and "fc2" in student_side
    assert "Distillation: default recipe, CorrelationDistillation" in markdown
    saved = pipeline.load_recipe(str(tmp_path / "recipe.json"))
    assert saved == recipe
    assert sorted(os.listdir(tmp_path / "stages")) == [
        "try1_1_prune.keras",
        "try1_2_quantize.keras",
    ]


def test_a_ptq_step_delivers_int4_weights(task, tmp_path):
    model, train, val = task
    recipe = pipeline.Recipe(
        [
            pipeline.Prune(0.5, epochs=2),
            pipeline.QuantizePostTraining("w4a8", algorithm="gptq"),
        ]
    )
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-int8",
        max_accuracy_drop=0.1,
        recipe=recipe,
        output=str(tmp_path),
        latency_runs=5,
        verbose=0,
    )
    stored = convert.weight_tensors(result.content)
    assert stored and {t.dtype for t in stored} == {"int4"}
    assert {t.compute for t in stored} == {"integer"}
    final = result.report.final
    assert final.stage.startswith("ptq(")
    assert _file_accuracy(result.content, *val) == pytest.approx(
        final.file_accuracy
    )
    assert result.budget_met
    # Nothing trained in the ptq step: no stage file for it; the recipe
    # round-trips through recipe.json.
    assert sorted(os.listdir(tmp_path / "stages")) == ["try1_1_prune.keras"]
    assert pipeline.load_recipe(str(tmp_path / "recipe.json")) == recipe


@pytest.mark.parametrize(
    "recipe, target, message",
    [
        (
            [pipeline.QuantizePostTraining("w4a8")],
            "onnx",
            "cannot take it",
        ),
        (
            [pipeline.QuantizeAware(), pipeline.QuantizePostTraining()],
            "tflite-int8",
            "not both",
        ),
        (
            [pipeline.QuantizePostTraining(), pipeline.Prune(0.5)],
            "tflite-int8",
            "the last step",
        ),
        (
            [pipeline.QuantizePostTraining({"nope": "w4"})],
            "tflite-int8",
            "names layer 'nope'",
        ),
        (
            [pipeline.QuantizePostTraining()],
            "tflite-integer-only",
            "may keep layers float",
        ),
    ],
)
def test_bad_ptq_recipes_fail_before_training(task, recipe, target, message):
    model, train, val = task
    with pytest.raises(ValueError, match=message):
        pipeline.compress(
            model, train, val, target=target, recipe=recipe, verbose=0
        )


def test_integer_only_target_refuses_a_float_op_before_training(task, tmp_path):
    _, train, val = task
    # An activation with no int8 kernel in LiteRT stays float in the file.
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(8, activation="elu", name="elu_fc")(inputs)
    elu_model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    output = tmp_path / "run"
    with pytest.raises(ValueError, match=r"before training.*ELU x1"):
        pipeline.compress(
            elu_model,
            train,
            val,
            target="tflite-integer-only",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            output=str(output),
            verbose=0,
        )
    assert not output.exists() or not any(output.iterdir())


def test_ptq_steps_check_their_arguments():
    with pytest.raises(ValueError, match="Unknown layer precision 'w9'"):
        pipeline.QuantizePostTraining("w9")
    with pytest.raises(ValueError, match="unknown `algorithm`='best'"):
        pipeline.QuantizePostTraining("w4", algorithm="best")
    step = pipeline.steps.step_from_config(
        {"step": "ptq", "precision": {"dense": "w4"}, "algorithm": "mse"}
    )
    assert step == pipeline.QuantizePostTraining({"dense": "w4"}, "mse")
    with pytest.raises(ValueError, match="unknown `activation_range`='p99'"):
        pipeline.QuantizePostTraining("w4a8", activation_range="p99")
    step = pipeline.QuantizePostTraining("w4a8", "gptq", "mse")
    assert step.get_config()["activation_range"] == "mse"
    assert (
        pipeline.steps.step_from_config({"step": "ptq", **step.get_config()})
        == step
    )


def test_unmeetable_budget_warns_and_delivers_the_best_file(task, tmp_path):
    model, train, val = task
    recipe = [pipeline.Prune(0.99, epochs=1)]
    with pytest.warns(UserWarning, match="Budget NOT met"):
        result = pipeline.compress(
            model,
            train,
            val,
            target="tflite-float32",
            max_accuracy_drop=0.0,
            recipe=recipe,
            distill=False,
            output=str(tmp_path),
            latency_runs=0,
            verbose=0,
        )
    assert not result.budget_met
    assert result.report.distillation is None  # distill=False
    assert result.report.final.accuracy_drop > 0.0
    assert os.path.exists(result.path)
    assert "NOT met" in (tmp_path / "report.md").read_text()
    assert analysis.sparsity_report(result.model).total_sparsity > 0.9


def test_budget_recipe_backs_off_until_the_file_is_within_budget(task):
    model, train, val = task
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Budget")  # it is met
        result = pipeline.compress(
            model,
            train,
            val,
            target="tflite-float32",
            max_accuracy_drop=0.02,
            epochs=1,
            sparsities=(0.5, 0.9),
            latency_runs=0,
            verbose=0,
        )
    report = result.report
    assert report.sensitivity is not None
    assert {row.layer for row in report.sensitivity.layers} == {
        "fc1",
        "fc2",
        "logits",
    }
    assert result.budget_met
    assert report.final.accuracy_drop <= 0.02
    # Every try before the delivered one missed the budget (else it would
    # have stopped there), and the tries compress less and less.
    stages = enumerate(report.stages)
    finals = [s for i, s in stages if _is_last_of_try(report, i)]
    assert finals[-1] is report.final
    assert all(s.accuracy_drop > 0.02 for s in finals[:-1])
    sparsities = [s.sparsity for s in finals]
    assert sparsities == sorted(sparsities, reverse=True)


def _is_last_of_try(report, index):
    stages = report.stages
    return index == len(stages) - 1 or stages[index + 1].attempt != (
        stages[index].attempt
    )


def test_resume_reuses_the_saved_stages(task, tmp_path):
    model, train, val = task
    kwargs = dict(
        target="tflite-float32",
        max_accuracy_drop=0.5,
        recipe=[pipeline.Prune(0.5, epochs=1)],
        output=str(tmp_path),
        latency_runs=0,
    )
    first = pipeline.compress(model, train, val, verbose=0, **kwargs)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        second = pipeline.compress(
            model, train, val, resume=True, verbose=1, **kwargs
        )
    assert "resumed from" in stdout.getvalue()
    assert "Epoch" not in stdout.getvalue()  # nothing was trained again
    assert second.content == first.content


def test_integer_only_target_delivers_an_integer_file(task):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-integer-only",
        max_accuracy_drop=0.05,
        recipe=[pipeline.QuantizeAware(epochs=1)],
        latency_runs=0,
        verbose=0,
    )
    interpreter = Interpreter(model_content=result.content)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert float_ops(result.content) == ()
    assert result.report.final.file_accuracy >= 0.8


def test_onnx_target_is_verified_with_onnxruntime(task):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="onnx",
        max_accuracy_drop=0.05,
        recipe=[pipeline.Prune(0.5, epochs=1)],
        latency_runs=0,
        verbose=0,
    )
    assert result.content[:4] != b"TFL3"
    assert _file_accuracy(result.content, *val) == pytest.approx(
        result.report.final.file_accuracy
    )
    assert result.report.original.target == "onnx"


def test_training_runs_under_a_distribution_strategy(task, strategy):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-float32",
        max_accuracy_drop=0.5,
        recipe=[pipeline.Prune(0.5, epochs=1)],
        strategy=strategy,
        latency_runs=0,
        verbose=0,
    )
    assert analysis.sparsity_report(result.model).total_sparsity > 0.4


def test_the_budget_search_trains_under_a_distribution_strategy(task, strategy):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-float32",
        max_accuracy_drop=0.5,
        max_bytes=0.8,
        epochs=1,
        strategy=strategy,
        latency_runs=0,
        verbose=0,
    )
    (plan, *_) = result.report.search["plans"]
    assert plan["channels"]
    # The delivered model is the thinner one, trained under the strategy.
    kept = {name: 32 * (1 - ratio) for name, ratio in plan["channels"].items()}
    for name, units in kept.items():
        assert result.model.get_layer(name).units == units
    assert result.report.final.bytes < result.report.original.bytes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"target": "coreml"}, "Unknown `target`='coreml'"),
        ({"max_accuracy_drop": -0.1}, "max_accuracy_drop"),
        ({"val_data": (np.zeros((0, 12)), np.zeros((0,)))}, "val_data.*empty"),
        ({"val_data": (np.zeros((4, 7)), np.zeros((4,)))}, "val_data.*shape"),
        ({"train_data": (np.zeros((4, 12)), np.zeros((3,)))}, "train_data"),
        ({"epochs": 0}, "epochs"),
        ({"resume": True}, "resume"),
        ({"recipe": [{"step": "prune"}]}, "Recipe step 0"),
        ({"recipe": {"steps": [{"step": "shrink"}]}}, "Unknown recipe step"),
        ({"distill": "yes"}, "`distill` must be True"),
        ({"distill": {"beta": 1}}, "unknown keys \\['beta'\\]"),
        ({"distill": {"alpha": 2}}, "distill\\['alpha'\\].*received"),
        ({"distill": {"temperature": 0}}, "distill\\['temperature'\\]"),
    ],
)
def test_bad_arguments_fail_before_training(task, change, message):
    model, train, val = task
    arguments = {
        "model": model,
        "train_data": train,
        "val_data": val,
        "verbose": 0,
        **change,
    }
    with pytest.raises(ValueError, match=message):
        pipeline.compress(**arguments)


def test_uncompiled_model_needs_a_loss(task):
    import keras

    model, train, val = task
    uncompiled = keras.Model(model.inputs, model.outputs)
    with pytest.raises(ValueError, match="pass `loss=`"):
        pipeline.compress(uncompiled, train, val, verbose=0)


@pytest.mark.parametrize("given_recipe", [False, True])
def test_a_step_that_cannot_run_fails_before_any_training(
    given_recipe, monkeypatch
):
    import keras

    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.LSTM(4, name="lstm")(keras.layers.Embedding(10, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    # Budget recipes for an int8 target end in QAT, as this one does.
    recipe = None
    if given_recipe:
        recipe = [pipeline.Prune(0.5), pipeline.QuantizeAware()]

    def no_training(*args, **kwargs):
        raise AssertionError("compress() trained before refusing the recipe")

    monkeypatch.setattr(pipeline.steps.TrainingContext, "fit", no_training)
    data = (np.zeros((8, 5), "int32"), np.zeros(8, "int32"))
    with pytest.raises(ValueError, match="'lstm' \\(LSTM\\) is recurrent"):
        pipeline.compress(
            model,
            data,
            data,
            target="tflite-int8",
            recipe=recipe,
            loss="sparse_categorical_crossentropy",
            verbose=0,
        )


def test_a_size_budget_is_met_by_a_searched_plan_on_the_file(task, tmp_path):
    from keras_compress.convert import flatbuffer

    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        max_accuracy_drop=0.05,
        max_bytes=0.7,
        output=str(tmp_path),
        latency_runs=3,
        verbose=0,
    )
    report = result.report
    limit = 0.7 * report.original.bytes
    with open(result.path, "rb") as f:
        content = f.read()
    assert result.budget_met
    assert len(content) <= limit
    assert report.budget_checks["bytes"] == {
        "value": len(content),
        "limit": pytest.approx(limit),
        "held": True,
    }
    assert report.budget_checks["accuracy_drop"]["held"]
    # The delivered recipe is the search's: fewer channels or 4-bit weights.
    delivered = json.loads((tmp_path / "recipe.json").read_text())
    names = [step["step"] for step in delivered["steps"]]
    assert names[-1] in ("ptq", "quantize")
    assert "ptq" in names or "prune_channels" in names
    if "ptq" in names:
        low = set(delivered["steps"][-1]["precision"])
        stored = {
            t.layer: t.dtype
            for t in flatbuffer.weight_tensors(content)
            if len(t.shape) >= 2  # kernels, not biases
        }
        assert all(stored[name] == "int4" for name in low), stored
    # The report shows the search: its scans (cached for resume), the
    # measured candidates, and the frontier plot.
    assert report.search["fits"]
    assert report.search["candidates"][0]["plan"] == {
        "channels": {},
        "low_bits": [],
    }
    markdown = (tmp_path / "report.md").read_text()
    assert "## Budget search" in markdown and "## Budgets" in markdown
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["budgets"]["max_bytes"] == 0.7
    assert saved["budget_checks"]["bytes"]["held"]
    for name in ("sensitivity_channels.json", "sensitivity_bits.json"):
        assert (tmp_path / name).exists()
    assert report.sensitivity is None  # no sparsity scan under cost budgets


def test_an_unmeetable_size_budget_names_the_budget_that_failed(task):
    model, train, val = task
    with pytest.warns(UserWarning, match=r"Budget NOT met \(bytes\)"):
        result = pipeline.compress(
            model,
            train,
            val,
            max_accuracy_drop=0.5,
            max_bytes=1000,
            epochs=1,
            latency_runs=3,
            verbose=0,
        )
    assert not result.budget_met
    checks = result.report.budget_checks
    assert not checks["bytes"]["held"] and checks["bytes"]["limit"] == 1000
    assert checks["accuracy_drop"]["held"]
    assert "allow a larger size or latency budget" in result.report.message
    # The closest plan: the smallest untrained file the search measured.
    candidates = result.report.search["candidates"]
    assert not result.report.search["fits"]
    assert len(result.report.recipes) == 1
    assert len(result.content) < candidates[0]["bytes"]


def test_a_latency_budget_met_by_int8_alone_keeps_every_channel(task):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        max_accuracy_drop=0.05,
        max_latency="1s",
        epochs=1,
        latency_runs=5,
        verbose=0,
    )
    assert result.budget_met
    assert result.report.search["plans"] == [{"channels": {}, "low_bits": []}]
    (recipe, *_) = result.report.recipes
    assert [step["step"] for step in recipe["steps"]] == ["quantize"]
    latency = result.report.budget_checks["latency_us"]
    assert latency["limit"] == pytest.approx(1e6)
    assert 0 < latency["value"] == result.report.final.latency_us
    # The search timed each layer at 8 and 4 bits, and the report says so.
    table = result.report.search["layer_latency_us"]
    assert set(table["base"]) == set(table["low"]) == {"fc1", "fc2", "logits"}
    markdown = result.report.to_markdown()
    assert "| layer | 8-bit us | 4-bit us | 4-bit / 8-bit |" in markdown
    assert "| fc1 |" in markdown


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_bytes": 0}, "`max_bytes`=0"),
        ({"max_bytes": 1.5}, r"`max_bytes`=1.5: a relative budget"),
        ({"max_bytes": "60 parsecs"}, "unknown unit 'parsecs'"),
        ({"max_latency": 20}, r"`max_latency`=20: a relative budget"),
        ({"max_latency": "20"}, "missing unit"),
        (
            {"max_latency": 0.5, "latency_runs": 0},
            "`max_latency` is checked on each file's measured latency",
        ),
    ],
)
def test_bad_budgets_fail_before_any_work(task, change, message, monkeypatch):
    model, train, val = task

    def no_conversion(*args, **kwargs):
        raise AssertionError("compress() converted before refusing")

    monkeypatch.setattr(pipeline.targets, "convert_to_target", no_conversion)
    with pytest.raises(ValueError, match=message):
        pipeline.compress(model, train, val, verbose=0, **change)


def test_keras_io_distillation_arguments_reach_the_distiller(task):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-float32",
        max_accuracy_drop=0.5,
        recipe=[pipeline.Prune(0.5, epochs=1)],
        distill={"alpha": 0.2, "temperature": 4},
        latency_runs=0,
        verbose=0,
    )
    recipe = result.report.distillation
    assert recipe["name"] == "keras.io"
    assert (recipe["alpha"], recipe["temperature"]) == (0.2, 4.0)
    assert recipe["distillation_loss"] == "SoftTargetKLDivergence"
    assert recipe["automatic_hint"] is None
