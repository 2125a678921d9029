"""Tiny models of every kind for the conformance matrix.

`build(kind)` returns `(model, x, y)`: a freshly built model (a few
thousand weights at most), 32 inputs (float32 images or features; int32
token ids for "rnn") and 32 integer labels of `NUM_CLASSES` classes;
`probe_inputs(kind)` gives more inputs of the same kind for checking files. The
BatchNormalization layers get non-trivial statistics so that folding and
QAT's folded BatchNorms compute something other than the identity.

The subclassed model's class lives here, in an importable module, so that a
`.keras` file of it loads without `custom_objects` and the TensorFlow worker
that converts JAX/PyTorch models can import it.
"""

import keras
import numpy as np

NUM_CLASSES = 4
NUM_SAMPLES = 32
KINDS = ("sequential", "functional", "nested", "subclassed", "rnn", "attention")

L = keras.layers


@keras.saving.register_keras_serializable(package="keras_compress_conformance")
class SubclassedCNN(keras.Model):
    """Conv2D -> BatchNorm -> relu(x) * 0.5 -> GAP -> Dropout -> Dense."""

    def __init__(self, filters=8, num_classes=NUM_CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.num_classes = num_classes
        self.conv = L.Conv2D(filters, 3, padding="same", name="conv")
        self.bn = L.BatchNormalization(name="bn")
        self.pool = L.GlobalAveragePooling2D(name="pool")
        self.dropout = L.Dropout(0.1, name="dropout")
        self.head = L.Dense(num_classes, name="logits")

    def call(self, inputs, training=None):
        x = self.bn(self.conv(inputs), training=training)
        x = keras.ops.relu(x) * 0.5
        x = self.pool(x)
        x = self.dropout(x, training=training)
        return self.head(x)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "num_classes": self.num_classes,
        }


@keras.saving.register_keras_serializable(package="keras_compress_conformance")
class FeedForwardBlock(L.Layer):
    """A Transformer feed-forward block written as KerasHub writes its
    blocks: a Layer made of layers (created in `build`), its residual in
    Python, its sub-layers called by keyword. Techniques open it up
    (`rewrite.opens_up`)."""

    def __init__(self, hidden_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        self.norm = L.LayerNormalization(name="ffn_norm")
        self.norm.build(input_shape)
        self.expand = L.Dense(self.hidden_dim, activation="relu", name="expand")
        self.expand.build(input_shape)
        self.project = L.Dense(input_shape[-1], name="project")
        self.project.build((*input_shape[:-1], self.hidden_dim))

    def call(self, inputs):
        x = self.expand(inputs=self.norm(inputs))
        return inputs + self.project(inputs=x)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}


def sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, name="conv"),
            L.ReLU(name="relu"),
            L.MaxPooling2D(name="pool"),
            L.Flatten(name="flatten"),
            L.Dense(NUM_CLASSES, name="logits"),
        ],
        name="sequential",
    )


def functional():
    inputs = keras.Input((8, 8, 4), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    y = L.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = L.Add(name="add")([x, y])
    # Depthwise-separable block.
    z = L.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    z = L.Conv2D(8, 1, name="pointwise")(z)
    x = L.Concatenate(name="concat")([x, z])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="functional")


def nested():
    block = keras.Sequential(
        [
            keras.Input((8, 8, 8)),
            L.Conv2D(8, 3, padding="same", name="block_conv"),
            L.BatchNormalization(name="block_bn"),
        ],
        name="block",
    )
    inputs = keras.Input((8, 8, 4), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.ReLU(name="stem_relu")(x)
    x = block(x)
    x = L.ReLU(name="block_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="nested")


def subclassed():
    model = SubclassedCNN(name="subclassed")
    model(np.zeros((1, 8, 8, 4), "float32"))
    return model


def rnn():
    inputs = keras.Input((8,), dtype="int32", name="tokens")
    x = L.Embedding(20, 8, name="embedding")(inputs)
    x = L.LSTM(8, name="lstm")(x)
    outputs = L.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="rnn")


def attention():
    inputs = keras.Input((8, 16), name="tokens")
    a = L.MultiHeadAttention(2, 8, name="mha")(inputs, inputs)
    x = L.Add(name="add")([inputs, a])
    x = L.LayerNormalization(name="norm")(x)
    x = FeedForwardBlock(name="ffn")(x)
    x = L.GlobalAveragePooling1D(name="gap")(x)
    outputs = L.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="attention")


_BUILDERS = {
    "sequential": sequential,
    "functional": functional,
    "nested": nested,
    "subclassed": subclassed,
    "rnn": rnn,
    "attention": attention,
}


def _data(kind, rng, n=NUM_SAMPLES):
    if kind == "rnn":
        x = rng.integers(0, 20, size=(n, 8)).astype("int32")
    elif kind == "attention":
        x = rng.normal(size=(n, 8, 16)).astype("float32")
    elif kind == "sequential":
        x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    else:
        x = rng.normal(size=(n, 8, 8, 4)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=n)
    return x, y


def _randomize_batch_norms(model, rng):
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, L.BatchNormalization)
    ]
    for layer in layers:
        size = layer.gamma.shape[0]
        layer.set_weights(
            [
                rng.uniform(0.5, 1.5, size).astype("float32"),  # gamma
                rng.normal(0, 0.2, size).astype("float32"),  # beta
                rng.normal(0, 0.3, size).astype("float32"),  # moving mean
                rng.uniform(0.5, 2.0, size).astype("float32"),  # moving var
            ]
        )


def build(kind):
    """`(model, x, y)` for one of `KINDS` (the data is always the same)."""
    if kind not in _BUILDERS:
        raise ValueError(
            f"Unknown model kind {kind!r}; expected one of {KINDS}."
        )
    rng = np.random.default_rng(0)
    model = _BUILDERS[kind]()
    _randomize_batch_norms(model, rng)
    x, y = _data(kind, rng)
    return model, x, y


def probe_inputs(kind, n=256):
    """`n` more inputs from the distribution of `build(kind)`'s (another
    seed): enough output values to judge an int8 file statistically."""
    x, _ = _data(kind, np.random.default_rng(1), n)
    return x
