"""PruneLowMagnitude on every supported layer type."""

import keras
import numpy as np
import pytest

from keras_compress import pruning
from keras_compress.pruning import schedules

L = keras.layers


def _mha_model():
    inputs = keras.Input((5, 8))
    outputs = L.MultiHeadAttention(num_heads=2, key_dim=4)(inputs, inputs)
    return keras.Model(inputs, outputs)


def _single(layer, shape, dtype="float32"):
    inputs = keras.Input(shape, dtype=dtype)
    return keras.Model(inputs, layer(inputs))


LAYER_CASES = {
    "Dense": lambda: _single(L.Dense(8), (12,)),
    "EinsumDense": lambda: _single(
        L.EinsumDense("ab,bc->ac", output_shape=8, bias_axes="c"), (12,)
    ),
    "Conv1D": lambda: _single(L.Conv1D(8, 3), (10, 4)),
    "Conv2D": lambda: _single(L.Conv2D(8, 3), (8, 8, 4)),
    "Conv3D": lambda: _single(L.Conv3D(4, 2), (4, 4, 4, 2)),
    "Conv1DTranspose": lambda: _single(L.Conv1DTranspose(8, 3), (10, 4)),
    "Conv2DTranspose": lambda: _single(L.Conv2DTranspose(8, 3), (6, 6, 4)),
    "DepthwiseConv2D": lambda: _single(L.DepthwiseConv2D(3), (8, 8, 4)),
    "SeparableConv1D": lambda: _single(L.SeparableConv1D(8, 3), (10, 4)),
    "SeparableConv2D": lambda: _single(L.SeparableConv2D(8, 3), (8, 8, 4)),
    "Embedding": lambda: _single(L.Embedding(20, 8), (5,), dtype="int32"),
    "SimpleRNN": lambda: _single(L.SimpleRNN(8), (5, 4)),
    "LSTM": lambda: _single(L.LSTM(8), (5, 4)),
    "GRU": lambda: _single(L.GRU(8), (5, 4)),
    "MultiHeadAttention": _mha_model,
}
EXPECTED_WEIGHTS = {
    "SeparableConv1D": ["pointwise_kernel"],
    "SeparableConv2D": ["pointwise_kernel"],
    "Embedding": ["embeddings"],
    "SimpleRNN": ["kernel", "recurrent_kernel"],
    "LSTM": ["kernel", "recurrent_kernel"],
    "GRU": ["kernel", "recurrent_kernel"],
    "MultiHeadAttention": ["kernel"] * 4,
}


def _inputs_for(model, n=32):
    rng = np.random.default_rng(0)
    shape = (n, *model.inputs[0].shape[1:])
    if "int" in str(model.inputs[0].dtype):
        return rng.integers(0, 20, size=shape)
    return rng.normal(size=shape).astype("float32")


def _fit_regression(model, x, epochs=1):
    target = np.zeros((len(x), *model.outputs[0].shape[1:]), "float32")
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(
        x,
        target,
        batch_size=8,
        epochs=epochs,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_layer_type_is_pruned_and_stays_pruned(case):
    model = LAYER_CASES[case]()
    x = _inputs_for(model)
    schedule = pruning.ConstantSparsity(0.5, begin_step=0, end_step=0)
    pruned = pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    wrappers = [
        layer
        for layer in pruned.layers
        if isinstance(layer, pruning.PruneLowMagnitude)
    ]
    assert len(wrappers) == 1
    wrapper = wrappers[0]
    names = [w.name for w in wrapper.prunable_weights]
    assert names == EXPECTED_WEIGHTS.get(case, ["kernel"])

    # Masks are set at step 0 only; 4 more optimizer steps must not revive
    # any pruned weight (the mask constraint undoes Adam's momentum).
    _fit_regression(pruned, x)
    for weight, mask in zip(wrapper.prunable_weights, wrapper.pruning_masks):
        w, m = weight.numpy(), mask.numpy()
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert int((m == 0).sum()) == schedules.number_to_prune(0.5, m.size)
        assert np.all(w[m == 0] == 0.0)
        assert np.count_nonzero(w[m == 1]) > 0.9 * m.sum()

    stripped = pruning.strip_pruning(pruned)
    assert not any(
        isinstance(layer, pruning.PruneLowMagnitude)
        for layer in stripped.layers
    )
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )


def test_wrapper_used_directly_in_a_functional_model():
    inputs = keras.Input((12,))
    x = pruning.PruneLowMagnitude(
        L.Dense(16, activation="relu"),
        pruning_schedule=pruning.ConstantSparsity(0.75, 0, frequency=2),
    )(inputs)
    model = keras.Model(inputs, L.Dense(2)(x))
    x_data = np.random.default_rng(0).normal(size=(32, 12)).astype("float32")
    _fit_regression(model, x_data)
    kernel = model.layers[1].layer.kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.75, abs=1 / 192)


def test_custom_layer_opts_in_with_get_prunable_weights():
    class Scale(L.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 6))
            self.b = self.add_weight(shape=(6,), initializer="ones")

        def call(self, x):
            return x @ self.w + self.b

        def get_prunable_weights(self):
            return [self.w]

    model = _single(Scale(name="scale"), (8,))
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0)
    )
    _fit_regression(pruned, _inputs_for(model))
    wrapper = pruned.layers[1]
    assert (wrapper.layer.w.numpy() == 0).sum() == 24
    assert (wrapper.layer.b.numpy() == 0).sum() == 0


def test_sparsity_m_by_n_gives_2_of_4_in_every_group():
    model = keras.Sequential(
        [keras.Input((3, 3, 8)), L.Conv2D(4, 3), L.Flatten(), L.Dense(8)]
    )
    pruned = pruning.prune_low_magnitude(
        model,
        pruning_schedule=pruning.ConstantSparsity(0.5, 0),
        sparsity_m_by_n=(2, 4),
    )
    _fit_regression(pruned, _inputs_for(model))
    for wrapper in pruned.layers:
        if not isinstance(wrapper, pruning.PruneLowMagnitude):
            continue
        kernel = wrapper.prunable_weights[0].numpy()
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)
        assert ((groups != 0).sum(axis=1) <= 2).all()
        assert (kernel == 0).mean() >= 0.5


def test_block_sparsity_prunes_blocks_of_a_dense_kernel():
    model = _single(L.Dense(8), (16,))
    pruned = pruning.prune_low_magnitude(
        model,
        pruning_schedule=pruning.ConstantSparsity(0.5, 0),
        block_size=(4, 2),
    )
    _fit_regression(pruned, _inputs_for(model))
    kernel = pruned.layers[1].layer.kernel.numpy()
    blocks = (kernel != 0).reshape(4, 4, 4, 2).any(axis=(1, 3))
    assert blocks.sum() == 8  # 16 blocks, half kept whole


def test_missing_update_pruning_step_callback_raises():
    model = _single(L.Dense(4), (8,))
    pruned = pruning.prune_low_magnitude(model)
    pruned.compile("adam", "mse")
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        pruned.fit(np.ones((8, 8)), np.ones((8, 4)), verbose=0)
    # The recovery the message gives works.
    pruned.compile("adam", "mse")
    pruned.fit(
        np.ones((8, 8)),
        np.ones((8, 4)),
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    assert int(pruning.get_pruners(pruned)[0].step.numpy()) == 0


def test_wrapper_rejects_layer_without_prunable_weights():
    with pytest.raises(ValueError, match="'bn'.*no prunable weights"):
        pruning.PruneLowMagnitude(L.BatchNormalization(name="bn"))


def test_n_m_with_indivisible_channels_raises_before_training():
    model = _single(L.Dense(8, name="odd"), (6,))
    with pytest.raises(
        ValueError, match="6 input channels .*which m=4 does not divide"
    ):
        pruning.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"block_size": (0, 2)}, "block_size"),
        ({"block_size": (2, 2), "sparsity_m_by_n": (2, 4)}, "cannot be"),
        ({"sparsity_m_by_n": (4, 2)}, "0 < n < m"),
        ({"block_pooling_type": "MEDIAN"}, "MEDIAN"),
        ({"pruning_schedule": 0.5}, "PruningSchedule"),
    ],
)
def test_bad_wrapper_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pruning.PruneLowMagnitude(L.Dense(4), **kwargs)


def test_wrapper_config_round_trip():
    wrapper = pruning.PruneLowMagnitude(
        L.Dense(4, name="d"),
        pruning_schedule=pruning.PolynomialDecay(0.1, 0.7, 0, 100),
        block_size=(2, 1),
        block_pooling_type="MAX",
    )
    restored = pruning.PruneLowMagnitude.from_config(wrapper.get_config())
    assert restored.get_config() == wrapper.get_config()
    assert isinstance(restored.pruning_schedule, pruning.PolynomialDecay)
