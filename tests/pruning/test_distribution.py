"""Pruning under tf.distribute.MirroredStrategy and with XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compress import pruning
from tests import helpers


def _check_pruned(pruned, sparsity):
    for pruner in pruning.get_pruners(pruned):
        for weight, mask in zip(pruner.weights, pruner.masks):
            w, m = weight.numpy(), mask.numpy()
            assert (m == 0).mean() == pytest.approx(sparsity, abs=0.02)
            assert np.all(w[m == 0] == 0)


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_mirrored_strategy_on_two_devices(kind, strategy):
    model, x, y = helpers.make_model(kind)
    with strategy.scope():
        pruned = pruning.prune_low_magnitude(
            model,
            pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=3),
        )
        helpers.compile_for_test(pruned)
    assert isinstance(
        pruning.get_pruners(pruned)[0].masks[0].value,
        tf.distribute.DistributedValues,
    )
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    _check_pruned(pruned, 0.5)
    # Both replicas hold the same (sparse) weights.
    for pruner in pruning.get_pruners(pruned):
        replicas = pruner.weights[0].value.values
        np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy())


def test_jit_compile_training():
    model, x, y = helpers.make_model("sequential")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=3)
    )
    helpers.compile_for_test(pruned, jit_compile=True)
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    _check_pruned(pruned, 0.5)
    assert keras.config.backend() == "tensorflow"
