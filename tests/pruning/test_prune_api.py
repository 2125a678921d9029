"""prune_low_magnitude / strip_pruning on every kind of model."""

import keras
import numpy as np
import pytest

from keras_compress import analysis
from keras_compress import pruning
from tests import helpers

SCHEDULE = pruning.PolynomialDecay(
    0.0, 0.6, begin_step=0, end_step=6, frequency=2
)


def _train(model, x, y, epochs=2, **compile_kwargs):
    helpers.compile_for_test(model, **compile_kwargs)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )


def _kernel_sparsities(model):
    return {
        f"{row.layer}/{row.weight}": row.sparsity
        for row in analysis.sparsity_report(model).rows
        if row.weight == "kernel"
    }


@pytest.mark.parametrize("kind", sorted(helpers.MODEL_KINDS))
def test_every_model_kind_prunes_strips_and_keeps_outputs(kind):
    model, x, y = helpers.make_model(kind)
    before = [w.copy() for w in model.get_weights()]
    pruned = pruning.prune_low_magnitude(model, pruning_schedule=SCHEDULE)
    # Same function before training: pruning starts from the same weights.
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )

    _train(pruned, x, y)  # 8 steps: masks updated at 0, 2, 4 and 6.
    sparsities = _kernel_sparsities(pruned)
    assert sparsities and all(
        s == pytest.approx(0.6, abs=0.05) for s in sparsities.values()
    ), sparsities

    stripped = pruning.strip_pruning(pruned)
    assert type(stripped) is type(model)
    assert not pruning.get_pruners(stripped)
    assert len(stripped.weights) == len(model.weights)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    assert analysis.sparsity_report(stripped).total_zeros == (
        analysis.sparsity_report(pruned).total_zeros
    )

    # The user's model is untouched: weights and constraints.
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert all(w.constraint is None for w in model.weights)


def test_subclassed_model_becomes_pruned_model_and_strips_to_its_class():
    model, x, y = helpers.make_model("subclassed")
    pruned = pruning.prune_low_magnitude(model)
    assert isinstance(pruned, pruning.PrunedModel)
    assert len(pruning.get_pruners(pruned)) == 4
    stripped = pruning.strip_pruning(pruned)
    assert isinstance(stripped, helpers.SubclassedMLP)


def test_layers_to_prune_by_name():
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(model, layers_to_prune=["fc2"])
    wrapped = [
        layer.layer.name
        for layer in pruned.layers
        if isinstance(layer, pruning.PruneLowMagnitude)
    ]
    assert wrapped == ["fc2"]


def test_layers_to_prune_by_callable():
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(
        model, layers_to_prune=lambda layer: layer.name != "logits"
    )
    wrapped = sorted(
        layer.layer.name
        for layer in pruned.layers
        if isinstance(layer, pruning.PruneLowMagnitude)
    )
    assert wrapped == ["fc1", "fc2"]


def test_prune_a_layer_and_a_list_of_layers():
    dense = keras.layers.Dense(4)
    wrapper = pruning.prune_low_magnitude(dense)
    assert isinstance(wrapper, pruning.PruneLowMagnitude)
    assert wrapper.layer is dense  # unbuilt: nothing to copy
    built = keras.layers.Dense(4)
    built.build((None, 3))
    wrappers = pruning.prune_low_magnitude([built, keras.layers.Conv2D(2, 1)])
    assert [type(w.layer).__name__ for w in wrappers] == ["Dense", "Conv2D"]
    assert wrappers[0].layer is not built  # built layers are copied
    np.testing.assert_array_equal(
        wrappers[0].layer.kernel.numpy(), built.kernel.numpy()
    )


def test_unprunable_layer_named_explicitly_raises():
    inputs = keras.Input((8,))
    x = keras.layers.BatchNormalization(name="norm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="'norm' \\(BatchNormalization\\)"):
        pruning.prune_low_magnitude(model, layers_to_prune=["norm"])


def test_unknown_layer_name_raises():
    model, _, _ = helpers.make_model("functional")
    with pytest.raises(ValueError, match="'nope'"):
        pruning.prune_low_magnitude(model, layers_to_prune=["nope"])


def test_unbuilt_model_raises():
    model = keras.Sequential([keras.layers.Dense(3)], name="unbuilt")
    with pytest.raises(ValueError, match="'unbuilt'.*has not been built"):
        pruning.prune_low_magnitude(model)


def test_model_with_nothing_to_prune_raises():
    model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layer to prune"):
        pruning.prune_low_magnitude(model)


def test_pruning_an_already_pruned_model_raises():
    model, _, _ = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="already pruned"):
        pruning.prune_low_magnitude(pruned)


def test_tfmot_only_arguments_are_rejected_clearly():
    model, _, _ = helpers.make_model("functional")
    with pytest.raises(ValueError, match="pruning_policy"):
        pruning.prune_low_magnitude(model, pruning_policy=object())
    with pytest.raises(TypeError, match="unexpected arguments"):
        pruning.prune_low_magnitude(model, sparsity=0.5)


def test_strip_pruning_rejects_non_models():
    with pytest.raises(ValueError, match="strip_pruning"):
        pruning.strip_pruning("model.keras")
