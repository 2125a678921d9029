import keras
import numpy as np
import pytest

from keras_compress import clustering
from tests import helpers
from tests.clustering import common


# "nested" is a Functional model holding a Sequential and a subclassed
# model: it covers the wrappers and a nested ClusteredModel.
@pytest.mark.parametrize("kind", ["subclassed", "nested"])
def test_keras_file_reloads_and_training_resumes(kind, tmp_path):
    model, x, y = helpers.make_model(kind)
    clustered = clustering.cluster_weights(
        model, 4, preserve_sparsity=True, per_channel=kind == "nested"
    )
    common.fit_briefly(clustered, x, y)
    path = str(tmp_path / "clustered.keras")
    clustered.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded) is type(clustered)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(clustered(x)),
        atol=1e-6,
    )
    # (Layer names may be numbered differently after loading.)
    saved = sorted(
        v.numpy().tolist() for v in clustered.weights if "centroids" in v.path
    )
    restored = sorted(
        v.numpy().tolist() for v in loaded.weights if "centroids" in v.path
    )
    assert saved and saved == restored
    losses = common.fit_briefly(loaded, x, y)
    assert np.isfinite(losses).all()
    stripped = clustering.strip_clustering(loaded)
    counts = common.clustered_leaf_counts(stripped, kind == "nested")
    assert counts and all(count <= 5 for count in counts.values()), counts


def test_wrapper_config_round_trip():
    wrapper = clustering.ClusterWeights(
        keras.layers.Conv2D(4, 3),
        number_of_clusters=8,
        cluster_centroids_init="density",
        preserve_sparsity=True,
        per_channel=True,
        seed=3,
    )
    config = keras.saving.serialize_keras_object(wrapper)
    copy = keras.saving.deserialize_keras_object(config)
    assert isinstance(copy, clustering.ClusterWeights)
    for name in (
        "number_of_clusters",
        "cluster_centroids_init",
        "preserve_sparsity",
        "per_channel",
        "seed",
    ):
        assert getattr(copy, name) == getattr(wrapper, name), name
