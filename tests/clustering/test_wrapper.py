import keras
import numpy as np
import pytest

from keras_compress import clustering
from tests.clustering import common

L = keras.layers

# name -> (layer factory, input shape, integer inputs?)
LAYER_KINDS = {
    "dense": (lambda: L.Dense(8), (12,), False),
    "conv1d": (lambda: L.Conv1D(4, 3), (10, 3), False),
    "conv2d": (lambda: L.Conv2D(4, 3), (6, 6, 2), False),
    "conv3d": (lambda: L.Conv3D(4, 2), (4, 4, 4, 1), False),
    "conv2d_transpose": (lambda: L.Conv2DTranspose(4, 3), (4, 4, 2), False),
    "separable_conv2d": (lambda: L.SeparableConv2D(8, 3), (6, 6, 4), False),
    "depthwise_conv2d": (lambda: L.DepthwiseConv2D(3), (6, 6, 4), False),
    "embedding": (lambda: L.Embedding(20, 4), (5,), True),
    "lstm": (lambda: L.LSTM(4), (5, 3), False),
}


def _model_with(kind):
    factory, shape, integer = LAYER_KINDS[kind]
    layer = factory()
    layer.name  # noqa: B018 (the name is set on construction)
    inputs = keras.Input(shape, dtype="int32" if integer else "float32")
    x = L.Flatten()(layer(inputs))
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    rng = np.random.default_rng(0)
    if integer:
        x = rng.integers(0, 20, size=(32, *shape))
    else:
        x = rng.normal(size=(32, *shape)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    return model, layer.name, x, y


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_every_layer_kind_clusters_and_strips(kind):
    model, name, x, y = _model_with(kind)
    clustered = clustering.cluster_weights(
        model, 4, layers_to_cluster=[name], cluster_centroids_init="linear"
    )
    wrapper = clustered.get_layer(f"cluster_{name}")
    before = [c.numpy().copy() for c in wrapper.cluster_centroids]
    common.fit_briefly(clustered, x, y, loss="mse")
    after = [c.numpy() for c in wrapper.cluster_centroids]
    # The centroids are trained (they get their members' gradients).
    assert any(not np.allclose(b, a) for b, a in zip(before, after))
    stripped = clustering.strip_clustering(clustered)
    counts = common.unique_counts(stripped.get_layer(name))
    assert counts and all(count <= 4 for count in counts), counts
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(stripped(x)),
        keras.ops.convert_to_numpy(clustered(x)),
        atol=1e-5,
    )


def test_per_channel_has_its_own_centroids_per_output_channel():
    model, name, x, y = _model_with("conv2d")
    clustered = clustering.cluster_weights(
        model, 3, per_channel=True, layers_to_cluster=[name]
    )
    wrapper = clustered.get_layer(f"cluster_{name}")
    assert wrapper.cluster_centroids[0].shape == (4, 3)
    common.fit_briefly(clustered, x, y, loss="mse")
    layer = clustering.strip_clustering(clustered).get_layer(name)
    assert common.unique_counts(layer, per_channel=True) == [3]
    # Per channel, the whole kernel holds more than 3 values.
    assert common.unique_counts(layer)[0] > 3


def test_original_weights_train_through_the_straight_through_gradient():
    model, name, x, y = _model_with("dense")
    clustered = clustering.cluster_weights(model, 4, layers_to_cluster=[name])
    wrapper = clustered.get_layer(f"cluster_{name}")
    kernel = wrapper.clustered_weights[0]
    before = kernel.numpy().copy()
    common.fit_briefly(clustered, x, y, loss="mse", epochs=2)
    assert not np.allclose(before, kernel.numpy())
    # The assignment follows the weights: it is recomputed each step.
    centroids = wrapper.cluster_centroids[0].numpy()[0]
    nearest = np.argmin(np.abs(kernel.numpy()[..., None] - centroids), -1)
    value = wrapper.clustered_values()[0].numpy()
    np.testing.assert_array_equal(value, centroids[nearest])


def test_wrapper_used_directly_in_a_model():
    inputs = keras.Input((6,))
    outputs = clustering.ClusterWeights(L.Dense(5), number_of_clusters=3)(
        inputs
    )
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    common.fit_briefly(model, x, np.zeros((16, 5), "float32"), loss="mse")
    stripped = clustering.strip_clustering(model)
    assert common.unique_counts(stripped.layers[-1]) == [3]


def test_wrapper_rejects_bad_arguments():
    with pytest.raises(ValueError, match="number_of_clusters=1"):
        clustering.ClusterWeights(L.Dense(3), number_of_clusters=1)
    with pytest.raises(ValueError, match="'flatten'.*no weights"):
        clustering.ClusterWeights(L.Flatten(name="flatten"), 4)
    with pytest.raises(ValueError, match="'uniform'"):
        clustering.ClusterWeights(L.Dense(3), 4, "uniform")
    with pytest.raises(ValueError, match="'small'.*fewer than"):
        layer = clustering.ClusterWeights(L.Dense(2, name="small"), 8)
        layer(np.zeros((1, 2), "float32"))


@pytest.fixture
def mixed_bfloat16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


def test_mixed_precision(mixed_bfloat16):
    model, name, x, y = _model_with("conv2d")
    clustered = clustering.cluster_weights(model, 4)
    wrapper = clustered.get_layer(f"cluster_{name}")
    assert wrapper.compute_dtype == "bfloat16"
    assert wrapper.cluster_centroids[0].dtype == "float32"
    losses = common.fit_briefly(clustered, x, y, loss="mse", epochs=2)
    assert np.all(np.isfinite(losses))
    stripped = clustering.strip_clustering(clustered)
    for layer_name, count in common.clustered_leaf_counts(stripped).items():
        assert count <= 4, layer_name


def test_trains_with_xla():
    model, name, x, y = _model_with("conv2d")
    clustered = clustering.cluster_weights(
        model, 4, per_channel=True, layers_to_cluster=[name]
    )
    clustered.compile(optimizer="adam", loss="mse", jit_compile=True)
    losses = clustered.fit(x, y, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(losses).all()
    layer = clustering.strip_clustering(clustered).get_layer(name)
    assert common.unique_counts(layer, per_channel=True) == [4]
