"""Recipe steps: each technique as a step, recipes as data."""

import numpy as np
import pytest

from keras_compress import clustering
from keras_compress import pipeline

ALL_STEPS = [
    pipeline.Prune({"fc1": 0.5, "fc2": 0.7}, epochs=1),
    pipeline.PruneChannels(0.25, epochs=1),
    pipeline.PruneChannels({"fc1": 0.5}, epochs=1, schedule="cosine"),
    pipeline.Cluster(8, epochs=1, init="linear"),
    pipeline.QuantizeAware(epochs=1, preserve_clusters=True),
]


def test_recipes_round_trip_through_json_and_yaml(tmp_path):
    recipe = pipeline.Recipe(ALL_STEPS)
    assert pipeline.Recipe.from_config(recipe.get_config()) == recipe
    json_path = tmp_path / "recipe.json"
    json_path.write_text(recipe.to_json())
    assert pipeline.load_recipe(str(json_path)) == recipe
    yaml_path = tmp_path / "recipe.yaml"
    yaml_path.write_text(
        "steps:\n"
        "  - {step: prune, sparsity: {fc1: 0.5, fc2: 0.7}, epochs: 1}\n"
        "  - {step: prune_channels, ratio: 0.25, epochs: 1}\n"
        "  - {step: prune_channels, ratio: {fc1: 0.5}, epochs: 1,\n"
        "     schedule: cosine}\n"
        "  - {step: cluster, number_of_clusters: 8, epochs: 1, init: linear}\n"
        "  - {step: quantize, epochs: 1, preserve_clusters: true}\n"
    )
    assert pipeline.load_recipe(str(yaml_path)) == recipe


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: pipeline.Prune(1.0), "sparsity.*\\[0, 1\\)"),
        (lambda: pipeline.Prune({"fc1": -0.1}), "layer 'fc1'"),
        (lambda: pipeline.PruneChannels(1.5), "ratio"),
        (
            lambda: pipeline.PruneChannels({"fc1": 1.2}),
            "`ratio` for layer 'fc1' must be in",
        ),
        (lambda: pipeline.PruneChannels({}), "empty dict"),
        (lambda: pipeline.PruneChannels(schedule="linear"), "schedule"),
        (lambda: pipeline.Cluster(1), "number_of_clusters"),
        (lambda: pipeline.QuantizeAware(epochs=0), "epochs"),
        (lambda: pipeline.QuantizeAware(learning_rate=0), "learning_rate"),
        (
            lambda: pipeline.Recipe.from_config(
                {"steps": [{"step": "cluster", "clusters": 8}]}
            ),
            "Recipe step 'cluster'.*clusters",
        ),
    ],
)
def test_bad_step_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_prune_cluster_quantize_keeps_zeros_and_clusters(task):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-int8",
        max_accuracy_drop=0.1,
        recipe=[
            pipeline.Prune(0.5, epochs=1),
            pipeline.Cluster(8, epochs=1),
            pipeline.QuantizeAware(epochs=1, preserve_clusters=True),
        ],
        latency_runs=0,
        verbose=0,
    )
    stages = [s.stage.split("(")[0] for s in result.report.stages]
    assert stages == ["prune", "cluster", "quantize"]
    # After QAT each kernel still has at most 8 shared values plus zero,
    # and the pruned half is still exactly zero.
    rows = [
        row
        for row in clustering.unique_values_report(result.model)
        if row["weight"] == "kernel"
    ]
    assert len(rows) == 3
    for row in rows:
        assert row["unique_values"] <= 9, row
        assert row["sparsity"] >= 0.45, row
    assert result.budget_met


def test_channel_pruning_step_shrinks_the_model(task):
    model, train, val = task
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-float32",
        max_accuracy_drop=0.5,
        recipe=[pipeline.PruneChannels(0.5, epochs=1)],
        latency_runs=0,
        verbose=0,
    )
    hidden = [
        w.shape for w in result.model.trainable_weights if len(w.shape) == 2
    ]
    assert hidden == [(12, 16), (16, 16), (16, 3)]
    report = result.report
    assert report.final.params < 0.5 * report.original.params
    assert np.isfinite(report.final.file_accuracy)


def test_per_layer_channel_ratios_are_checked_before_training(task):
    model, train, val = task
    with pytest.raises(ValueError, match="'nope'"):
        pipeline.PruneChannels({"nope": 0.5}).check(model)
    # The logits are the model's output: their channels cannot go.
    with pytest.raises(ValueError, match="'logits'"):
        pipeline.PruneChannels({"logits": 0.5}).check(model)
    result = pipeline.compress(
        model,
        train,
        val,
        target="tflite-float32",
        max_accuracy_drop=0.5,
        recipe=[pipeline.PruneChannels({"fc1": 0.5}, epochs=1)],
        latency_runs=0,
        verbose=0,
    )
    assert result.model.get_layer("fc1").units == 16
    assert result.model.get_layer("fc2").units == 32
