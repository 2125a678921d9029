"""Tiny teacher/student pairs and data for the distillation tests."""

import keras
import numpy as np

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 3


def teacher_model():
    """A small CNN with named layers (logits out)."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(6, 3, activation="relu", name="t_conv"),
            keras.layers.MaxPooling2D(name="t_pool"),
            keras.layers.Flatten(name="t_flatten"),
            keras.layers.Dense(16, activation="relu", name="t_hidden"),
            keras.layers.Dense(NUM_CLASSES, name="t_logits"),
        ],
        name="teacher",
    )


def student_model(hidden=8):
    """A Functional student narrower than the teacher."""
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(3, 3, activation="relu", name="s_conv")(inputs)
    x = keras.layers.MaxPooling2D(name="s_pool")(x)
    x = keras.layers.Flatten(name="s_flatten")(x)
    x = keras.layers.Dense(hidden, activation="relu", name="s_hidden")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="s_logits")(x)
    return keras.Model(inputs, outputs, name="student")


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=n)
    return x, y


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compile_distiller(distiller, keras_io=True, **kwargs):
    """Compiles with the keras.io arguments (alpha 0.1, T 3) unless
    `keras_io=False` (then only what `kwargs` gives: the default recipe
    when they name no alpha, temperature or loss)."""
    kwargs.setdefault("student_loss_fn", sparse_ce())
    if keras_io and not {"alpha", "temperature", "distillation_loss_fn"} & set(
        kwargs
    ):
        kwargs.update(alpha=0.1, temperature=3)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        **kwargs,
    )
    return distiller


def layer_output(model, name, x):
    """The output of `model`'s layer `name` on `x` (NumPy)."""
    layer = model.get_layer(name)
    return keras.Model(model.inputs, layer.output).predict(x, verbose=0)
