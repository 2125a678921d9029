"""Walking, copying and rewriting models of every kind."""

import keras
import numpy as np
import pytest

from keras_compress import rewrite
from tests import helpers


def test_iter_layers_reaches_nested_and_subclassed_layers():
    model, _, _ = helpers.make_model("nested")
    paths = [path for path, _ in rewrite.iter_layers(model)]
    assert "inner_sequential/inner_fc" in paths
    assert "middle" in paths
    # The subclassed model's attributes, its list and its nested Sequential.
    sub_paths = [p for p in paths if p.startswith("sub/")]
    assert len(sub_paths) == 4
    # Containers only on request.
    assert "sub" not in paths
    with_models = [
        p for p, _ in rewrite.iter_layers(model, include_models=True)
    ]
    assert "sub" in with_models and "inner_sequential" in with_models


def test_iter_layers_yields_a_shared_layer_once():
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    outputs = shared(shared(inputs))
    model = keras.Model(inputs, outputs)
    assert [p for p, _ in rewrite.iter_layers(model)] == ["shared"]


def test_leaf_layers_order_is_stable_across_instances():
    first = helpers.subclassed_mlp()
    second = helpers.subclassed_mlp()
    assert [type(x).__name__ for x in rewrite.leaf_layers(first)] == [
        type(x).__name__ for x in rewrite.leaf_layers(second)
    ]
    shapes = [[w.shape for w in x.weights] for x in rewrite.leaf_layers(first)]
    assert shapes == [
        [w.shape for w in x.weights] for x in rewrite.leaf_layers(second)
    ]


@pytest.mark.parametrize("kind", sorted(helpers.MODEL_KINDS))
def test_copy_layer_is_independent_and_equal(kind):
    model, x, _ = helpers.make_model(kind)
    copy = rewrite.copy_layer(model)
    assert copy is not model
    np.testing.assert_allclose(
        copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    original = [w.copy() for w in model.get_weights()]
    copy.set_weights([np.zeros_like(w) for w in copy.get_weights()])
    for before, after in zip(original, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_copy_layer_of_a_plain_layer():
    layer = keras.layers.Conv2D(3, 3)
    layer.build((None, 8, 8, 2))
    copy = rewrite.copy_layer(layer)
    assert copy.built and copy is not layer
    for a, b in zip(copy.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_clone_and_replace_swaps_layers_and_keeps_the_rest():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="fc")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    outputs = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(inputs, outputs)

    def no_dropout(layer):
        if isinstance(layer, keras.layers.Dropout):
            return keras.layers.Identity(name=layer.name)
        return None

    clone = rewrite.clone_and_replace(model, no_dropout)
    assert isinstance(clone.get_layer("drop"), keras.layers.Identity)
    assert isinstance(model.get_layer("drop"), keras.layers.Dropout)
    assert clone.get_layer("fc") is not model.get_layer("fc")
    x_data = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(
        clone.predict(x_data, verbose=0),
        model.predict(x_data, verbose=0),
        atol=1e-6,
    )


def test_clone_and_replace_rewrites_nested_models():
    model, x, _ = helpers.make_model("nested")
    seen = []

    def record(layer):
        seen.append(layer.name)
        return None

    clone = rewrite.clone_and_replace(model, record)
    assert "inner_fc" in seen  # inside the nested Sequential
    assert "sub" in seen  # a subclassed model is handed over whole
    np.testing.assert_allclose(
        clone.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_clone_and_replace_keeps_shared_layers_shared():
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, shared(shared(inputs)))
    clone = rewrite.clone_and_replace(model, lambda layer: None)
    assert len(clone.layers) == len(model.layers)
    assert len(clone.weights) == 2


def test_clone_and_replace_rejects_subclassed_and_unbuilt_models():
    with pytest.raises(ValueError, match="subclassed"):
        rewrite.clone_and_replace(helpers.subclassed_mlp(), lambda _: None)
    with pytest.raises(ValueError, match="has not been built"):
        rewrite.clone_and_replace(
            keras.Sequential([keras.layers.Dense(2)]), lambda _: None
        )


def test_recorded_leaf_layers_finds_layers_and_rejects_a_changed_class():
    owner = keras.Sequential(name="owner")
    model = helpers.SubclassedMLP()  # not built: built from input_shape
    entries = [{"index": 0, "class_name": "Dense"}]
    (layer,) = rewrite.recorded_leaf_layers(owner, model, entries, (None, 16))
    assert model.built and layer is rewrite.leaf_layers(model)[0]
    with pytest.raises(ValueError, match="expected a Conv2D at layer pos"):
        rewrite.recorded_leaf_layers(
            owner, model, [{"index": 0, "class_name": "Conv2D"}], (None, 16)
        )
    with pytest.raises(ValueError, match="found nothing"):
        rewrite.recorded_leaf_layers(
            owner, model, [{"index": 99, "class_name": "Dense"}], (None, 16)
        )


def test_inline_nested_models_flattens_and_computes_the_same():
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="fc")], name="inner"
    )
    inputs = keras.Input((6,))
    x = keras.layers.Dense(6, name="fc")(inputs)  # the same name as inside
    x = inner(keras.layers.ReLU(name="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    flat = rewrite.inline_nested_models(model)
    assert [layer.name for layer in flat.layers] == [
        flat.layers[0].name,
        "fc",
        "relu",
        "inner_fc",  # renamed: the outer model has an "fc" already
        "out",
    ]
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)
    # Copies: the user's model keeps its own, nested layers.
    assert model.get_layer("inner").get_layer("fc").kernel is not (
        flat.get_layer("inner_fc").kernel
    )
    flat_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert rewrite.inline_nested_models(flat_model) is flat_model


class _Block(keras.layers.Layer):
    """A custom layer made of layers (as KerasHub writes its blocks)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        return inputs + self.dense(inputs)


class _SelfBuildingDense(keras.layers.Dense):
    """Builds itself in __init__ from a shape its config records, as
    KerasHub's TransformerDecoder does."""

    def __init__(self, units, input_dim=None, **kwargs):
        super().__init__(units, **kwargs)
        self.input_dim = input_dim
        if input_dim:
            self.build((None, input_dim))

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim}


def test_opens_up_custom_blocks_but_not_keras_units():
    block = _Block()
    block.build((None, 4))
    assert rewrite.opens_up(block)
    # Keras's own composite layers, and subclasses of them, are units.
    attention = keras.layers.MultiHeadAttention(2, 4)
    attention.build((None, 3, 4), (None, 3, 4))
    assert not rewrite.opens_up(attention)

    class CachedAttention(keras.layers.MultiHeadAttention):
        pass

    cached = CachedAttention(2, 4)
    cached.build((None, 3, 4), (None, 3, 4))
    assert not rewrite.opens_up(cached)
    assert not rewrite.opens_up(keras.layers.Dense(2))
    # A graph model is rewritten node by node; a subclassed one is opened.
    graph, _, _ = helpers.make_model("functional")
    assert not rewrite.opens_up(graph)
    assert rewrite.opens_up(helpers.subclassed_mlp())


def test_copy_layer_of_a_layer_that_builds_itself_from_its_config():
    layer = _SelfBuildingDense(3, input_dim=5)
    copy = rewrite.copy_layer(layer)  # no second build: it would fail
    assert copy.built
    for a, b in zip(copy.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_copy_with_entries_takes_a_unit_without_its_sub_layers():
    # Selecting every prunable layer of a model holding a MultiHeadAttention
    # picks the attention once, not also its four projections.
    class Model(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.attention = keras.layers.MultiHeadAttention(2, 4)
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(self.attention(x, x))

    model = Model()
    model(np.zeros((1, 3, 4), "float32"))
    _, entries, names = rewrite.copy_with_entries(
        model, lambda layer: bool(layer.weights), {}
    )
    assert [e["class_name"] for e in entries] == ["MultiHeadAttention", "Dense"]
    assert len(names) == 2
