"""Sensitivity scans: one layer compressed at a time, the model untouched."""

import keras
import numpy as np
import pytest

from keras_compress import analysis
from keras_compress.pruning import masks
from tests import helpers


@pytest.fixture
def model_and_data():
    model = helpers.functional_mlp()
    x, y = helpers.make_data((16,), 3, n=128)
    return model, x, y


def test_each_figure_is_the_accuracy_with_that_layer_pruned(model_and_data):
    model, x, y = model_and_data
    before = [w.copy() for w in model.get_weights()]
    report = analysis.pruning_sensitivity(model, x, y, sparsities=(0.5, 0.9))
    assert [row.layer for row in report.layers] == ["fc1", "fc2", "logits"]
    for before_weight, after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(before_weight, after)

    def accuracy(m):
        return float(np.mean(m.predict(x, verbose=0).argmax(axis=1) == y))

    assert report.baseline_accuracy == pytest.approx(accuracy(model))
    # Recompute one figure by hand on a separate copy.
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    kernel = copy.get_layer("fc2").kernel
    mask = np.asarray(masks.magnitude_mask(kernel, 0.9))
    kernel.assign(kernel.numpy() * mask)
    row = report.layers[1]
    assert row.params == 16 * 16
    assert row.sparsities == (0.5, 0.9)
    assert row.accuracies[1] == pytest.approx(accuracy(copy))


def test_sparsity_plan_takes_the_most_each_layer_tolerates():
    row = analysis.LayerSensitivity("a", 10, (0.5, 0.7, 0.9), (0.79, 0.75, 0.5))
    other = analysis.LayerSensitivity("b", 10, (0.5, 0.7, 0.9), (0.6, 0.5, 0.4))
    report = analysis.SensitivityReport(0.8, (row, other))
    assert report.sparsity_plan(0.05) == {"a": 0.7}
    assert report.sparsity_plan(0.3) == {"a": 0.9, "b": 0.7}
    assert analysis.SensitivityReport.from_dict(report.as_dict()) == report
    assert "b" in str(report)


def test_bad_arguments(model_and_data):
    model, x, y = model_and_data
    with pytest.raises(ValueError, match="sparsities"):
        analysis.pruning_sensitivity(model, x, y, sparsities=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"\['nope'\] .* a sparsity scan"):
        analysis.pruning_sensitivity(model, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="same number of samples"):
        analysis.pruning_sensitivity(model, x, y[:5])


def test_precision_figures_are_the_accuracy_with_that_layer_rounded(
    model_and_data,
):
    model, x, y = model_and_data
    before = [w.copy() for w in model.get_weights()]
    report = analysis.precision_sensitivity(model, x, y, bits=(2, 4))
    assert report.knob == "bits"
    assert [row.layer for row in report.layers] == ["fc1", "fc2", "logits"]
    for before_weight, after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(before_weight, after)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    kernel = copy.get_layer("fc2").kernel
    rounded = analysis.sensitivity.round_to_bits(kernel.numpy(), 2)
    # Two bits, symmetric: -1, 0 or +1 step per output channel.
    steps = rounded / np.abs(rounded).max(axis=0)
    assert set(np.unique(np.round(steps, 6))) <= {-1.0, 0.0, 1.0}
    kernel.assign(rounded)
    row = report.layers[1]
    assert row.values == (4, 2)
    predicted = copy.predict(x, verbose=0).argmax(axis=1)
    assert row.accuracy(2) == pytest.approx(float(np.mean(predicted == y)))
    assert report.drop("fc2", 2) == pytest.approx(
        report.baseline_accuracy - row.accuracy(2)
    )
    assert analysis.SensitivityReport.from_dict(report.as_dict()) == report
    assert "4 bits" in str(report)
    with pytest.raises(ValueError, match=r"`bits` .* \[2, 8\]"):
        analysis.precision_sensitivity(model, x, y, bits=(1,))


def test_channel_figures_are_the_accuracy_of_the_smaller_model(
    model_and_data,
):
    from keras_compress import pruning

    model, x, y = model_and_data
    before = [w.copy() for w in model.get_weights()]
    report = analysis.channel_sensitivity(model, x, y, ratios=(0.5,))
    assert report.knob == "channels"
    # fc1 and fc2 are tied by the Add: one group, named by fc1. The logits
    # are the model's output: their channels stay.
    assert [row.layer for row in report.layers] == ["fc1"]
    for before_weight, after in zip(before, model.get_weights()):
        np.testing.assert_array_equal(before_weight, after)
    smaller = pruning.prune_channels(model, layers={"fc1": 0.5})
    predicted = smaller.predict(x, verbose=0).argmax(axis=1)
    assert report.layers[0].accuracy(0.5) == pytest.approx(
        float(np.mean(predicted == y))
    )
    assert report.layers[0].params == 2 * (16 * 16 + 16)
    assert "fraction of this layer's channels removed" in str(report)
    with pytest.raises(ValueError, match="ratios"):
        analysis.channel_sensitivity(model, x, y, ratios=(1.0,))


def test_reports_written_before_other_knobs_still_read():
    old = {
        "baseline_accuracy": 0.9,
        "layers": [
            {
                "layer": "a",
                "params": 4,
                "sparsities": [0.5],
                "accuracies": [0.8],
            }
        ],
    }
    report = analysis.SensitivityReport.from_dict(old)
    assert report.knob == "sparsity"
    assert report.layers[0].sparsities == (0.5,)
