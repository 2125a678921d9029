import numpy as np

from keras_compress import clustering
from tests import helpers
from tests.clustering import common


def test_fit_under_mirrored_strategy(strategy):
    model, x, y = helpers.make_model("sequential")
    with strategy.scope():
        clustered = clustering.cluster_weights(model, 4, preserve_sparsity=True)
        losses = common.fit_briefly(clustered, x, y, epochs=2)
    assert np.isfinite(losses).all()
    # Replicas stay in sync: one set of centroids, mirrored.
    wrapper = next(
        layer
        for layer in clustered.layers
        if isinstance(layer, clustering.ClusterWeights)
    )
    values = strategy.experimental_local_results(
        wrapper.cluster_centroids[0].value
    )
    assert len(values) == 2
    np.testing.assert_array_equal(values[0].numpy(), values[1].numpy())
    stripped = clustering.strip_clustering(clustered)
    counts = common.clustered_leaf_counts(stripped)
    assert counts and all(c <= 4 for c in counts.values()), counts
