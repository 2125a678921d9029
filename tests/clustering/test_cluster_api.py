import keras
import numpy as np
import pytest

from keras_compress import clustering
from keras_compress import pruning
from tests import helpers
from tests.clustering import common


@pytest.mark.parametrize("kind", sorted(helpers.MODEL_KINDS))
def test_every_model_kind(kind):
    model, x, y = helpers.make_model(kind)
    original = [w.copy() for w in model.get_weights()]
    clustered = clustering.cluster_weights(model, 4)
    common.fit_briefly(clustered, x, y)
    stripped = clustering.strip_clustering(clustered)
    assert type(stripped) is type(model)
    counts = common.clustered_leaf_counts(stripped)
    # Every Dense/Conv layer of the model is clustered, nested ones too.
    expected = sum(
        1
        for _, layer in clustering.cluster_api.rewrite.iter_layers(model)
        if layer.weights
    )
    assert len(counts) == expected
    assert all(count <= 4 for count in counts.values()), counts
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stripped(x)),
        keras.ops.convert_to_numpy(clustered(x)),
        atol=1e-5,
    )
    # The user's model is never modified.
    for before, after in zip(original, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_layers_to_cluster_selects_by_name_or_callable():
    model, x, y = helpers.make_model("functional")
    by_name = clustering.cluster_weights(model, 4, layers_to_cluster=["fc2"])
    assert [
        layer.name
        for layer in by_name.layers
        if isinstance(layer, clustering.ClusterWeights)
    ] == ["cluster_fc2"]
    by_callable = clustering.cluster_weights(
        model, 4, layers_to_cluster=lambda layer: layer.name != "logits"
    )
    wrapped = {
        layer.name
        for layer in by_callable.layers
        if isinstance(layer, clustering.ClusterWeights)
    }
    assert wrapped == {"cluster_fc1", "cluster_fc2"}


def test_preserve_sparsity_keeps_the_exact_zero_set():
    model, x, y = helpers.make_model("sequential")
    pruned = pruning.prune_low_magnitude(
        model,
        pruning_schedule=pruning.ConstantSparsity(0.6, 0, frequency=1),
    )
    helpers.compile_for_test(pruned)
    pruned.fit(
        x, y, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()]
    )
    sparse = pruning.strip_pruning(pruned)
    zeros = {
        layer.name: layer.kernel.numpy() == 0
        for layer in sparse.layers
        if hasattr(layer, "kernel")
    }
    clustered = clustering.cluster_weights(sparse, 4, preserve_sparsity=True)
    common.fit_briefly(clustered, x, y, epochs=2)
    stripped = clustering.strip_clustering(clustered)
    for name, was_zero in zeros.items():
        kernel = stripped.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(kernel == 0, was_zero)
        assert np.unique(kernel).size <= 5  # 4 clusters + the zeros
        # The wrapped layer's own variable kept its zeros through training.
        wrapper = clustered.get_layer(f"cluster_{name}")
        np.testing.assert_array_equal(
            wrapper.clustered_weights[0].numpy() == 0, was_zero
        )


def test_report_lists_unique_values_per_weight():
    model, x, y = helpers.make_model("functional")
    stripped = clustering.strip_clustering(
        clustering.cluster_weights(model, 3, per_channel=True)
    )
    rows = {
        row["layer"]: row for row in clustering.unique_values_report(stripped)
    }
    assert set(rows) == {"fc1", "fc2", "logits"}
    assert rows["fc1"]["shape"] == (16, 16)
    assert rows["fc1"]["max_unique_per_channel"] <= 3
    assert rows["fc1"]["unique_values"] > 3


def test_a_layer_returns_a_wrapper_and_strips_back():
    layer = keras.layers.Dense(4)
    layer.build((None, 8))
    wrapper = clustering.cluster_weights(layer, 2)
    assert isinstance(wrapper, clustering.ClusterWeights)
    assert wrapper.layer is not layer
    wrapper.build((None, 8))
    stripped = clustering.strip_clustering(wrapper)
    assert np.unique(stripped.kernel.numpy()).size <= 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"number_of_clusters": 1}, "number_of_clusters=1"),
        ({"number_of_clusters": 2.5}, "number_of_clusters=2.5"),
        ({"number_of_clusters": 100}, "'logits'.*48 values.*=100"),
        (
            {"number_of_clusters": 4, "cluster_centroids_init": "mean"},
            "'mean'",
        ),
        (
            {"number_of_clusters": 4, "layers_to_cluster": ["ADD"]},
            "'ADD'.*no weights to cluster",
        ),
        (
            {"number_of_clusters": 4, "layers_to_cluster": ["nope"]},
            "nope",
        ),
        (
            {
                "number_of_clusters": 4,
                "per_channel": True,
                "layers_to_cluster": ["logits"],
            },
            None,
        ),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    model = helpers.functional_mlp()
    add = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.Add)
    )
    if kwargs.get("layers_to_cluster") == ["ADD"]:
        kwargs = {**kwargs, "layers_to_cluster": [add.name]}
        message = f"'{add.name}'.*no weights to cluster"
    if message is None:  # 16 values per channel >= 4 clusters: accepted
        clustering.cluster_weights(model, **kwargs)
        return
    with pytest.raises(ValueError, match=message):
        clustering.cluster_weights(model, **kwargs)


def test_per_channel_weight_count_is_checked_per_channel():
    model = helpers.functional_mlp()
    with pytest.raises(ValueError, match="'fc1'.*16 values per output channel"):
        clustering.cluster_weights(model, 20, per_channel=True)


def test_already_wrapped_models_are_refused():
    model, _, _ = helpers.make_model("functional")
    clustered = clustering.cluster_weights(model, 4)
    with pytest.raises(ValueError, match="already wrapped"):
        clustering.cluster_weights(clustered, 4)
    pruned = pruning.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="strip_pruning"):
        clustering.cluster_weights(pruned, 4)
