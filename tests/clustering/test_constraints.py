import keras
import numpy as np
import pytest

from keras_compress import clustering
from keras_compress import quantization
from tests import helpers


def test_cluster_ids_reserve_zero_for_zeros():
    values = np.array([[0.5, 0.0], [-1.0, 0.5]], "float32")
    ids = clustering.cluster_ids_from_values(values)
    assert ids.dtype == np.int32
    assert ids[0, 1] == 0
    assert ids[0, 0] == ids[1, 1] != ids[1, 0]
    assert ids.min() == 0 and 0 not in ids[values != 0]


def test_constraint_sets_each_weight_to_its_cluster_mean():
    start = np.array([0.5, 0.0, -1.0, 0.5, -1.0, 0.0], "float32")
    ids = keras.Variable(clustering.cluster_ids_from_values(start))
    constraint = clustering.ClusterConstraint(ids)
    moved = start + np.array([0.1, 0.3, 0.2, 0.3, -0.2, -0.1], "float32")
    result = keras.ops.convert_to_numpy(constraint(moved))
    np.testing.assert_allclose(result, [0.7, 0, -1.0, 0.7, -1.0, 0], atol=1e-6)


def test_cluster_preserving_qat_keeps_clusters_and_zeros():
    model, x, y = helpers.make_model("functional")
    clustered = clustering.cluster_weights(model, 4)
    helpers.compile_for_test(clustered)
    clustered.fit(x, y, epochs=1, verbose=0)
    stripped = clustering.strip_clustering(clustered)
    # Zero a few weights by hand, as pruning would.
    kernel = stripped.get_layer("fc1").kernel
    kernel.assign(np.where(np.arange(256).reshape(16, 16) % 3 == 0, 0, kernel))
    zeros = kernel.numpy() == 0
    qat = quantization.quantize_model(
        stripped, preserve_sparsity=True, preserve_clusters=True
    )
    wrapper = qat.get_layer("quant_fc1")
    before = wrapper.quantized_weights[0].numpy().copy()
    helpers.compile_for_test(qat)
    qat.fit(x, y, epochs=2, verbose=0)
    after = wrapper.quantized_weights[0].numpy()
    assert not np.allclose(before, after)  # the shared values train
    np.testing.assert_array_equal(after == 0, zeros)
    assert np.unique(after[~zeros]).size <= 4
    # Weights that shared a value still share one.
    for value in np.unique(before[~zeros]):
        assert np.unique(after[before == value]).size == 1


def test_preserve_clusters_round_trips_and_is_checked(tmp_path):
    model, x, y = helpers.make_model("subclassed")
    stripped = clustering.strip_clustering(clustering.cluster_weights(model, 3))
    qat = quantization.quantize_model(stripped, preserve_clusters=True)
    helpers.compile_for_test(qat)
    qat.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "qat.keras")
    qat.save(path)
    loaded = keras.saving.load_model(path)
    helpers.compile_for_test(loaded)
    loaded.fit(x, y, epochs=1, verbose=0)
    for wrapper in loaded.wrappers:
        assert wrapper.preserve_clusters
        assert np.unique(wrapper.quantized_weights[0].numpy()).size <= 3
    with pytest.raises(ValueError, match="preserve_clusters.*'yes'"):
        quantization.quantize_model(stripped, preserve_clusters="yes")


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_quantizing_an_unstripped_clustered_model_is_an_error(kind):
    model, _, _ = helpers.make_model(kind)
    clustered = clustering.cluster_weights(model, 4)
    with pytest.raises(ValueError, match="strip_clustering"):
        quantization.quantize_model(clustered, preserve_clusters=True)
