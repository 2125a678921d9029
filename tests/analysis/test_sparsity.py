"""sparsity_report: per-weight counts and totals."""

import json

import keras
import numpy as np
import pytest

from keras_compress import analysis
from keras_compress import pruning
from tests import helpers


def _model_with_known_zeros():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, name="a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(2, name="b"),
        ]
    )
    kernel = np.ones((4, 5), "float32")
    kernel[:, :2] = 0.0  # 8 of 20 zeros
    model.get_layer("a").kernel.assign(kernel)
    return model


def test_counts_zeros_per_weight_and_in_total():
    model = _model_with_known_zeros()
    report = analysis.sparsity_report(model)
    rows = {f"{r.layer}/{r.weight}": r for r in report.rows}
    assert rows["a/kernel"].zeros == 8 and rows["a/kernel"].params == 20
    assert rows["a/kernel"].sparsity == pytest.approx(0.4)
    assert rows["a/kernel"].shape == (4, 5)
    # Biases start at zero; BN's gamma/beta are trainable, moving stats not.
    assert "bn/moving_mean" not in rows and "bn/gamma" in rows
    assert report.total_params == model.count_params() - 2 * 5
    assert report.total_zeros == sum(r.zeros for r in report.rows)
    assert report.total_sparsity == pytest.approx(
        report.total_zeros / report.total_params
    )


def test_non_trainable_weights_on_request():
    model = _model_with_known_zeros()
    report = analysis.sparsity_report(model, include_non_trainable=True)
    names = {f"{r.layer}/{r.weight}" for r in report.rows}
    assert {"bn/moving_mean", "bn/moving_variance"} <= names
    assert report.total_params == model.count_params()


def test_nested_model_paths():
    model, _, _ = helpers.make_model("nested")
    layers = {row.layer for row in analysis.sparsity_report(model).rows}
    assert "inner_sequential/inner_fc" in layers
    assert any(name.startswith("sub/") for name in layers)


def test_pruned_and_stripped_models_report_the_same():
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=1)
    )
    helpers.compile_for_test(pruned)
    pruned.fit(
        x, y, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()]
    )
    pruned_report = analysis.sparsity_report(pruned)
    stripped_report = analysis.sparsity_report(pruning.strip_pruning(pruned))
    # Masks and step counters are pruning state, not model weights.
    assert pruned_report.total_params == stripped_report.total_params
    assert pruned_report.total_zeros == stripped_report.total_zeros
    assert pruned_report.total_sparsity > 0.3


def test_as_dict_is_json_and_str_is_a_table():
    report = analysis.sparsity_report(_model_with_known_zeros())
    data = json.loads(json.dumps(report.as_dict()))
    assert data["total_params"] == report.total_params
    assert data["layers"][0]["sparsity"] == pytest.approx(0.4)
    text = str(report)
    assert "a/kernel" in text and "40.0%" in text
    assert text.splitlines()[-1].startswith("total")


def test_unbuilt_model_is_rejected():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="has not been built"):
        analysis.sparsity_report(model)
