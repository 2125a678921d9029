"""pruning_sensitivity: one layer pruned at a time, the model untouched."""

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
    with pytest.raises(ValueError, match=r"\['nope'\] are not prunable"):
        analysis.pruning_sensitivity(model, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="same number of samples"):
        analysis.pruning_sensitivity(model, x, y[:5])
