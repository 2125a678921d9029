"""Small models of every kind and tiny data, shared by the tests."""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class SubclassedMLP(keras.Model):
    """A subclassed model with a layer list and a nested Sequential."""

    def __init__(self, units=16, num_classes=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.num_classes = num_classes
        self.hidden = keras.layers.Dense(units, activation="relu")
        self.blocks = [
            keras.layers.Dense(units, activation="relu") for _ in range(2)
        ]
        self.head = keras.Sequential([keras.layers.Dense(num_classes)])

    def call(self, inputs):
        x = self.hidden(inputs)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_classes": self.num_classes,
        }


def sequential_cnn(input_shape=(12, 12, 1), num_classes=4):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(num_classes),
        ],
        name="sequential_cnn",
    )


def functional_mlp(input_dim=16, num_classes=3):
    inputs = keras.Input((input_dim,))
    x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    y = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    x = keras.layers.Add()([x, y])
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="functional_mlp")


def nested_model(input_dim=16, num_classes=3):
    """Functional model holding a Sequential and a subclassed model."""
    inner = keras.Sequential(
        [keras.Input((input_dim,)), keras.layers.Dense(16, name="inner_fc")],
        name="inner_sequential",
    )
    inputs = keras.Input((input_dim,))
    x = inner(inputs)
    x = keras.layers.Dense(16, activation="relu", name="middle")(x)
    outputs = SubclassedMLP(units=8, num_classes=num_classes, name="sub")(x)
    return keras.Model(inputs, outputs, name="nested")


def subclassed_mlp(input_dim=16, num_classes=3):
    model = SubclassedMLP(num_classes=num_classes)
    model(np.zeros((1, input_dim), "float32"))
    return model


# kind -> (builder, input shape, number of classes)
MODEL_KINDS = {
    "sequential": (sequential_cnn, (12, 12, 1), 4),
    "functional": (functional_mlp, (16,), 3),
    "subclassed": (subclassed_mlp, (16,), 3),
    "nested": (nested_model, (16,), 3),
}


def tied_language_model(vocabulary_size=16, width=8, length=5, block=None):
    """A causal LM as KerasHub builds one (GPT-2, Gemma).

    The backbone embeds the tokens and runs `block` (a `Dense(width)` named
    "mixer" by default); the outer model reuses the same
    `ReversibleEmbedding` ("token_embedding"), reversed, as its head.
    """
    embedding = keras.layers.ReversibleEmbedding(
        vocabulary_size, width, name="token_embedding"
    )
    if block is None:
        block = keras.layers.Dense(width, name="mixer")
    tokens = keras.Input((length,), dtype="int32", name="token_ids")
    backbone = keras.Model(tokens, block(embedding(tokens)), name="backbone")
    outer_tokens = keras.Input((length,), dtype="int32", name="token_ids")
    logits = embedding(backbone(outer_tokens), reverse=True)
    return keras.Model(outer_tokens, logits, name="language_model")


def make_model(kind):
    """Returns `(model, x, y)`: a built model of `kind` and data for it."""
    builder, shape, num_classes = MODEL_KINDS[kind]
    x, y = make_data(shape, num_classes)
    return builder(), x, y


def make_data(shape, num_classes, n=64, seed=0):
    """Random float32 inputs of `shape` and integer labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, num_classes, size=n)
    return x, y


def compile_for_test(model, **kwargs):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **kwargs,
    )
    return model
