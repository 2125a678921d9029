"""The shared checks of user data: one-line errors naming the argument."""

import keras
import numpy as np
import pytest

from keras_compress import data_checks


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((0, 3)), "`x` is empty"),
        (np.array(["a", "b"]), "dtype <U1"),
        (np.array([[1.0, np.inf]]), r"1 non-finite value\(s\) \(infinity"),
        (np.full((4, 2), np.nan), r"8 non-finite value\(s\) \(NaN; the first"),
        ([np.zeros((2, 3)), np.array([[0.0], [np.nan]])], r"`x\[1\]` holds"),
        ({"ids": np.zeros((0, 2))}, r"`x\['ids'\]` is empty"),
    ],
)
def test_bad_inputs_are_refused_by_name(x, message):
    with pytest.raises(ValueError, match=message):
        data_checks.check_inputs(x, "x")


def test_good_inputs_pass():
    data_checks.check_inputs(np.zeros((2, 3), "float32"), "x")
    data_checks.check_inputs([np.zeros((2, 3)), np.ones((2,), "int32")], "x")


@pytest.mark.parametrize(
    "y, kwargs, message",
    [
        (
            np.array([0, 1, 3]),
            {"num_classes": 3},
            r"labels from 0 to 3.*\[0, 2\]",
        ),
        (np.array([-1, 0]), {}, "must be non-negative"),
        (np.array([0.5, 1.0]), {}, "fractional"),
        (np.array([0, 1]), {"num_samples": 3}, "2 labels but there are 3"),
        (np.zeros((0,)), {}, "no labels"),
        (np.array([0.0, np.nan]), {}, "non-finite"),
        (np.zeros((2, 2, 2)), {}, "one integer label per sample"),
    ],
)
def test_bad_labels_are_refused(y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data_checks.check_labels(y, "y", **kwargs)


def test_labels_come_back_as_integers_one_per_sample():
    one_hot = np.eye(3)[[2, 0, 1]]
    np.testing.assert_array_equal(
        data_checks.check_labels(one_hot, "y", 3, 3), [2, 0, 1]
    )
    column = np.array([[1.0], [0.0]])
    labels = data_checks.check_labels(column, "y", num_classes=2)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0]


def test_number_of_classes_from_the_model_output():
    inputs = keras.Input((4,))
    softmax = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    sigmoid = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    assert data_checks.num_classes(softmax) == 5
    assert data_checks.num_classes(sigmoid) == 2  # one unit: two classes


@pytest.mark.parametrize(
    "samples, reason",
    [
        ([[np.zeros((1, 3))]] * 4, "every value is zero"),
        ([[np.ones((1, 3))]] * 4, "all 4 samples are identical"),
    ],
)
def test_uninformative_calibration_warns(samples, reason):
    with pytest.warns(UserWarning, match=reason):
        data_checks.warn_if_uninformative(samples, "representative_data")


def test_varied_calibration_is_quiet(recwarn):
    samples = [[np.full((1, 3), float(i))] for i in range(4)]
    data_checks.warn_if_uninformative(samples, "representative_data")
    assert not recwarn.list
