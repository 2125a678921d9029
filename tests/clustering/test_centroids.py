import numpy as np
import pytest

from keras_compress.clustering import centroids


@pytest.mark.parametrize("method", centroids.CENTROID_INITS)
def test_each_init_gives_sorted_centroids_in_range(method):
    values = np.random.default_rng(0).normal(size=1000)
    result = centroids.init_centroids(values, 8, method, seed=1)
    assert result.shape == (8,)
    assert np.all(np.diff(result) >= 0)
    assert result.min() >= values.min() - 1e-6
    assert result.max() <= values.max() + 1e-6
    again = centroids.init_centroids(values, 8, method, seed=1)
    np.testing.assert_array_equal(result, again)


def test_kmeans_finds_well_separated_modes():
    rng = np.random.default_rng(0)
    modes = np.array([-2.0, 0.5, 3.0])
    values = np.concatenate([m + 0.01 * rng.normal(size=300) for m in modes])
    result = centroids.init_centroids(values, 3, "kmeans++")
    # Seeding picks one weight per mode (a far mode is almost sure to be
    # drawn next).
    np.testing.assert_allclose(result, modes, atol=0.05)


def test_linear_and_density_follow_their_definitions():
    values = np.concatenate([np.zeros(90), np.linspace(1, 10, 10)])
    np.testing.assert_allclose(
        centroids.init_centroids(values, 3, "linear"), [0, 5, 10]
    )
    # Density: evenly spaced quantiles, so most centroids sit at the mode.
    density = centroids.init_centroids(values, 3, "density")
    assert density[0] == 0 and density[1] == 0 and density[2] == 10


def test_fewer_distinct_values_than_clusters():
    result = centroids.init_centroids(np.array([1.0, 1.0, 2.0]), 4)
    assert result.shape == (4,)
    assert {1.0, 2.0} <= set(result.tolist())


def test_unknown_init_is_an_error():
    with pytest.raises(ValueError, match="'kmeans'"):
        centroids.init_centroids(np.ones(10), 4, "kmeans")
