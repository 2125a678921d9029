"""The compression core: stateless calls, constraints, wrappers, state."""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress import core
from keras_compress.core import constraints
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
