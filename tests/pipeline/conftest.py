"""A small trained classifier and data with a learnable rule."""

import keras
import numpy as np
import pytest


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    # Three classes decided by fixed linear scores: learnable in seconds.
    scores = x @ np.random.default_rng(42).normal(size=(12, 3))
    return x, scores.argmax(axis=1)


@pytest.fixture(scope="module")
def task():
    """`(trained model, (x_train, y_train), (x_val, y_val))`."""
    keras.utils.set_random_seed(0)
    train, val = _data(768, 0), _data(256, 1)
    inputs = keras.Input((12,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs, name="mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(*train, batch_size=64, epochs=8, verbose=0)
    return model, train, val
