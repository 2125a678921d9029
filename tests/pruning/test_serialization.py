"""`.keras` save/load of pruned models, mid-training checkpoints, resume."""

import keras
import numpy as np
import pytest

from keras_compress import pruning
from keras_compress.pruning.schedules import number_to_prune
from tests import helpers

SCHEDULE = pruning.PolynomialDecay(
    0.0, 0.8, begin_step=0, end_step=14, frequency=2
)


def _fit(model, x, y, epochs=1, callbacks=()):
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep(), *callbacks],
    )


@pytest.mark.parametrize("kind", sorted(helpers.MODEL_KINDS))
def test_save_load_resume_equals_uninterrupted_training(kind, tmp_path):
    model, x, y = helpers.make_model(kind)  # 64 samples: 8 steps an epoch

    straight = pruning.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    helpers.compile_for_test(straight)
    _fit(straight, x, y, epochs=2)

    first_half = pruning.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    helpers.compile_for_test(first_half)
    _fit(first_half, x, y, epochs=1)
    path = tmp_path / "pruned.keras"
    first_half.save(path)
    resumed = keras.saving.load_model(path)  # no custom_objects
    assert type(resumed) is type(first_half)
    np.testing.assert_allclose(
        resumed.predict(x, verbose=0),
        first_half.predict(x, verbose=0),
        atol=1e-6,
    )
    assert [int(p.step.numpy()) for p in pruning.get_pruners(resumed)] == (
        [7] * len(pruning.get_pruners(straight))
    )
    _fit(resumed, x, y, epochs=1)

    assert [int(p.step.numpy()) for p in pruning.get_pruners(resumed)] == (
        [int(p.step.numpy()) for p in pruning.get_pruners(straight)]
    )
    for a, b in zip(
        pruning.get_pruners(straight), pruning.get_pruners(resumed)
    ):
        for mask_a, mask_b in zip(a.masks, b.masks):
            np.testing.assert_array_equal(mask_a.numpy(), mask_b.numpy())
    np.testing.assert_allclose(
        resumed.predict(x, verbose=0), straight.predict(x, verbose=0), atol=1e-4
    )


def test_mid_epoch_checkpoint_holds_sparse_weights(tmp_path):
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.7, 0, frequency=1)
    )
    helpers.compile_for_test(pruned)
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "step.keras"), save_freq=5
    )
    _fit(pruned, x, y, callbacks=[checkpoint])

    # Read the raw kernels from the file, not through masks.
    restored = keras.saving.load_model(tmp_path / "step.keras")
    for pruner in pruning.get_pruners(restored):
        for weight, mask in zip(pruner.weights, pruner.masks):
            w, m = weight.numpy(), mask.numpy()
            assert (w == 0).sum() >= number_to_prune(0.7, w.size)
            assert np.all(w[m == 0] == 0)


def test_stripped_model_round_trips_as_plain_keras(tmp_path):
    model, x, y = helpers.make_model("sequential")
    pruned = pruning.prune_low_magnitude(model)
    helpers.compile_for_test(pruned)
    _fit(pruned, x, y)
    stripped = pruning.strip_pruning(pruned)
    stripped.save(tmp_path / "stripped.keras")
    config = (tmp_path / "stripped.keras").read_bytes()
    assert b"PruneLowMagnitude" not in config
    restored = keras.saving.load_model(tmp_path / "stripped.keras")
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
