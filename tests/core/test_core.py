"""The compression core: stateless calls, constraints, wrappers, state."""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress import core
from keras_compress.core import constraints
from keras_compress.core import keras_private
from keras_compress.core import stateless
from tests import helpers


def _conv():
    layer = keras.layers.Conv2D(4, 3, use_bias=True)
    layer.build((None, 6, 6, 2))
    layer.bias.assign(np.arange(4, dtype="float32"))
    return layer


def test_call_with_values_maps_every_variable():
    layer = _conv()
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    zero_kernel = np.zeros(layer.kernel.shape, "float32")
    outputs = stateless.call_with_values(
        layer, {id(layer.kernel): zero_kernel}, x
    )
    # Kernel replaced, bias (not in `values`) still its own value.
    expected = np.broadcast_to(np.arange(4, dtype="float32"), (2, 4, 4, 4))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), expected)


def test_call_with_values_inside_an_outer_stateless_scope():
    # What JAX's train step does: the layer's variables hold no value of
    # their own, only the outer scope's. A partial inner mapping used to
    # leave the bias without one.
    layer = _conv()
    x = np.ones((1, 6, 6, 2), "float32")
    new_bias = keras.ops.ones((4,))
    with keras.StatelessScope(
        state_mapping=[
            (layer.kernel, layer.kernel.value),
            (layer.bias, new_bias),
        ]
    ):
        outputs = stateless.call_with_values(
            layer,
            {id(layer.kernel): np.zeros(layer.kernel.shape, "float32")},
            x,
        )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), 1.0)


def test_call_with_values_keeps_state_updates():
    bn = keras.layers.BatchNormalization(momentum=0.0)
    bn.build((None, 3))
    x = np.full((4, 3), 2.0, "float32")
    stateless.call_with_values(
        bn, {id(bn.gamma): keras.ops.ones((3,))}, x, training=True
    )
    np.testing.assert_allclose(bn.moving_mean.numpy(), 2.0)


def test_install_constraint_keeps_user_constraint_and_does_not_stack():
    layer = keras.layers.Dense(3, kernel_constraint=keras.constraints.NonNeg())
    layer.build((None, 2))
    mask = keras.Variable(np.array([[1, 0, 1], [0, 1, 1]], "float32"))
    core.install_constraint(layer.kernel, core.MaskConstraint(mask))
    core.install_constraint(layer.kernel, core.MaskConstraint(mask))
    installed = constraints.projection_of(layer.kernel)
    assert isinstance(installed.base, keras.constraints.NonNeg)
    value = np.array([[-1.0, 2.0, 3.0], [4.0, 5.0, -6.0]], "float32")
    projected = keras.ops.convert_to_numpy(installed(value))
    np.testing.assert_array_equal(projected, [[0, 0, 3], [0, 5, 0]])
    if keras.backend.backend() != "jax":
        assert layer.kernel.constraint is installed


def test_wrapper_base_refuses_models_and_wrapped_layers():
    model, _, _ = helpers.make_model("functional")
    with pytest.raises(ValueError, match="model-level function"):
        kc.pruning.PruneLowMagnitude(model)
    wrapped = kc.pruning.PruneLowMagnitude(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="already wrapped"):
        kc.clustering.ClusterWeights(wrapped, number_of_clusters=2)


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_compression_state(kind):
    model, _, _ = helpers.make_model(kind)
    pruned = kc.pruning.prune_low_magnitude(model)
    states = [
        core.compression_state(layer)
        for layer in pruned._flatten_layers(include_self=False)
        if not isinstance(layer, keras.Model)
    ]
    pruned_states = [s for s in states if s.pruned]
    assert pruned_states
    for state in pruned_states:
        assert state.techniques == ("pruning",)
        assert isinstance(state.wrapper, kc.pruning.PruneLowMagnitude)
        assert not state.quantized and not state.clustered
    plain = core.compression_state(keras.layers.Dense(2))
    assert plain.techniques == () and plain.wrapper is None


def test_attention_internals_recompute_the_layer():
    # What QAT's attention computation reads from MultiHeadAttention
    # (private in Keras): recomputing the layer with it gives its output.
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 3, 8)).astype("float32")
    value = rng.normal(size=(2, 5, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(query, value))
    internals = keras_private.attention_internals(layer)
    q = layer.query_dense(query) * internals.inverse_sqrt_key_dim
    k = layer.key_dense(value)
    v = layer.value_dense(value)
    probs = internals.softmax(
        keras.ops.einsum(internals.dot_product_equation, k, q)
    )
    outputs = layer.output_dense(
        keras.ops.einsum(internals.combine_equation, probs, v)
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs), expected, atol=1e-5
    )


def test_causal_padding_pads_the_past():
    layer = keras.layers.Conv1D(2, 3, padding="causal", dilation_rate=2)
    assert [list(p) for p in keras_private.causal_padding(layer)] == [
        [0, 0],
        [4, 0],
        [0, 0],
    ]
