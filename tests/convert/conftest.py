"""Tiny models and data for the conversion tests.

Converting takes about a second per file, so the models and the files made
from them are module- or session-scoped fixtures.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

INPUT_SHAPE = (12, 12, 3)
NUM_CLASSES = 4


def sequential_model():
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def functional_model():
    """Conv, depthwise conv, BatchNorm, Add, Concatenate, pooling, Dense."""
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    branch = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    branch = keras.layers.BatchNormalization()(branch)
    branch = keras.layers.ReLU()(branch)
    x = keras.layers.Add()([x, branch])
    side = keras.layers.Conv2D(8, 1, activation="relu")(x)
    x = keras.layers.Concatenate()([x, side])
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES)(x)
    return keras.Model(inputs, outputs)


class SubclassedModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(32, 3, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.hidden = keras.layers.Dense(64, activation="relu")
        self.head = keras.layers.Dense(NUM_CLASSES)

    def call(self, inputs):
        return self.head(self.hidden(self.pool(self.conv(inputs))))


def subclassed_model():
    model = SubclassedModel()
    model(np.zeros((1, *INPUT_SHAPE), "float32"))
    return model


BUILDERS = {
    "sequential": sequential_model,
    "functional": functional_model,
    "subclassed": subclassed_model,
}


def toy_data(num_samples, seed):
    """A separable problem: each class is a fixed pattern plus noise."""
    patterns = np.random.default_rng(123).normal(
        size=(NUM_CLASSES, *INPUT_SHAPE)
    )
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, num_samples)
    x = patterns[y] + 0.5 * rng.normal(size=(num_samples, *INPUT_SHAPE))
    return x.astype("float32"), y


def trained(model, x, y, epochs=8):
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def toy_train():
    return toy_data(256, seed=1)


@pytest.fixture(scope="session")
def toy_test():
    return toy_data(128, seed=2)


@pytest.fixture(scope="session", params=sorted(BUILDERS))
def trained_model(request, toy_train):
    """Each kind of model, trained briefly on the toy problem."""
    keras.utils.set_random_seed(0)
    return request.param, trained(BUILDERS[request.param](), *toy_train)


def dict_io_model():
    """A Functional model taking and returning dicts: inputs "image"
    (6, 6, 2) and "extra" (3,), outputs "logits" (5) and "score" (1)."""
    image = keras.Input((6, 6, 2), name="image")
    extra = keras.Input((3,), name="extra")
    x = keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(image), extra]
    )
    return keras.Model(
        {"image": image, "extra": extra},
        {"logits": keras.layers.Dense(5)(x), "score": keras.layers.Dense(1)(x)},
    )


class FakeQuantDense(keras.layers.Layer):
    """A Dense layer with fixed fake-quant ranges, as QAT leaves them.

    Input, kernel and output go through `fake_quant_with_min_max_vars`, so
    the exported graph carries every range the converter needs for int8.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="glorot_uniform"
        )

    def call(self, inputs):
        fake_quant = keras.quantizers.fake_quant_with_min_max_vars
        x = fake_quant(inputs, -4.0, 4.0, num_bits=8)
        kernel = fake_quant(self.kernel, -1.0, 1.0, narrow_range=True)
        return fake_quant(keras.ops.matmul(x, kernel), -8.0, 8.0)


def fake_quant_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((16,)), FakeQuantDense(32), FakeQuantDense(4)]
    )


def keras_quantized(model):
    """An int8 copy of `model` made with Keras's own `Model.quantize`."""
    import warnings

    from keras_compress import rewrite

    copy = rewrite.copy_layer(model)
    with warnings.catch_warnings():
        # Keras warns once per layer that it cannot quantize (Conv2D, ...).
        warnings.simplefilter("ignore", UserWarning)
        copy.quantize("int8")
    return copy
