"""`build_optimizer`: one trace of the train step instead of two, same
training."""

import keras
import numpy as np
import pytest

from keras_compress.core import training

# The double trace is TensorFlow's (`tf.function` and variable creation);
# on JAX and PyTorch Keras builds the optimizer before tracing, and
# `build_optimizer` does nothing.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the TensorFlow backend's train function",
)


def _compiled(optimizer="adam"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _data():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    return x, x[:, :2]


def _fit_counting_traces(model):
    """Fits one epoch; returns how often `train_step` ran in Python (once
    per trace of the train function, never per executed step)."""
    traces = []
    train_step = model.train_step

    def counted(data):
        traces.append(1)
        return train_step(data)

    model.train_step = counted
    model.fit(*_data(), batch_size=8, verbose=0)
    return len(traces)


def test_the_train_step_is_traced_once_and_trains_the_same():
    plain = _compiled()
    plain_traces = _fit_counting_traces(plain)
    built = _compiled()
    training.build_optimizer(built)
    assert built.optimizer.built
    built_traces = _fit_counting_traces(built)

    assert built_traces == 1
    # TensorFlow traces a function that creates variables twice.
    assert plain_traces == 2
    for a, b in zip(plain.get_weights(), built.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_unbuilt_model_is_left_to_keras():
    model = keras.Sequential([keras.layers.Dense(2)])  # no input shape
    model.compile(optimizer="adam", loss="mse")
    training.build_optimizer(model)
    assert not model.optimizer.built
    model.fit(*_data(), verbose=0)  # Keras builds both on the first batch


def test_a_model_under_a_strategy_is_left_to_keras(strategy):
    with strategy.scope():
        model = _compiled()
    training.build_optimizer(model)
    assert not model.optimizer.built  # Keras builds it, mirrored
    model.fit(*_data(), batch_size=8, verbose=0)
    assert model.optimizer.built


def test_a_built_optimizer_is_kept():
    model = _compiled()
    training.build_optimizer(model)
    variables = list(model.optimizer.variables)
    training.build_optimizer(model)
    assert list(model.optimizer.variables) == variables


def test_an_uncompiled_model_is_a_no_op():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    training.build_optimizer(model)
    assert getattr(model, "optimizer", None) is None
