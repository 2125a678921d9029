"""Where the clusters start: the initial centroids of a weight.

All four methods run once, in numpy, on the weights the layer holds when it
is wrapped (they are seeded, so the same model clusters the same way):

- `"kmeans++"`: k-means++ seeding: each new centroid is a weight drawn
  with a probability proportional to its squared distance from the
  nearest centroid chosen so far. (No Lloyd iterations after it: they make
  the clusters equally full, which costs compression, and training moves
  the centroids anyway.)
- `"linear"`: evenly spaced between the smallest and largest weight; keeps
  the rare large weights, which matter most, in clusters of their own.
- `"density"`: evenly spaced quantiles, so each cluster starts with about
  as many weights.
- `"random"`: uniform between the smallest and largest weight.
"""

import numpy as np

CENTROID_INITS = ("kmeans++", "linear", "density", "random")
# k-means++ works on at most this many weights (a random sample beyond).
_MAX_SAMPLE = 20_000


def check_init(cluster_centroids_init):
    """Raises a ValueError unless the name is one of `CENTROID_INITS`."""
    if cluster_centroids_init not in CENTROID_INITS:
        raise ValueError(
            "`cluster_centroids_init` must be one of "
            f"{list(CENTROID_INITS)}; received {cluster_centroids_init!r}."
        )


def init_centroids(values, number_of_clusters, method="kmeans++", seed=0):
    """Initial centroids for a set of weight values.

    Args:
        values: A 1D numpy array of the weights to cluster (finite).
        number_of_clusters: How many centroids to return.
        method: One of `CENTROID_INITS`.
        seed: Seed for `"kmeans++"` and `"random"`.

    Returns:
        A sorted float32 array of `number_of_clusters` centroids.

    Example:

    ```python
    centroids = init_centroids(kernel.ravel(), 16, "kmeans++")
    ```
    """
    check_init(method)
    values = np.asarray(values, dtype="float64").ravel()
    k = int(number_of_clusters)
    if values.size == 0:
        return np.zeros(k, "float32")
    low, high = float(values.min()), float(values.max())
    rng = np.random.default_rng(seed)
    if method == "linear" or low == high:
        centroids = np.linspace(low, high, k)
    elif method == "random":
        centroids = rng.uniform(low, high, k)
    elif method == "density":
        centroids = np.quantile(values, np.linspace(0.0, 1.0, k))
    else:
        centroids = _kmeans(values, k, rng)
    return np.sort(centroids).astype("float32")


def _kmeans(values, k, rng):
    if values.size > _MAX_SAMPLE:
        values = rng.choice(values, _MAX_SAMPLE, replace=False)
    centroids = [values[rng.integers(values.size)]]
    distances = (values - centroids[0]) ** 2
    for _ in range(1, k):
        total = distances.sum()
        if total <= 0:  # fewer distinct values than clusters
            break
        chosen = values[rng.choice(values.size, p=distances / total)]
        centroids.append(chosen)
        distances = np.minimum(distances, (values - chosen) ** 2)
    centroids = np.array(centroids)
    if centroids.size < k:
        # Fewer distinct values than clusters: pad with evenly spaced ones.
        extra = np.linspace(values.min(), values.max(), k - centroids.size)
        centroids = np.concatenate([centroids, extra])
    return centroids
