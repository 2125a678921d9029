"""`cluster_weights` and `strip_clustering`: the entry points."""

import logging

import keras

from keras_compress import rewrite
from keras_compress.clustering import centroids as centroids_lib
from keras_compress.clustering import clustered_model as clustered_model_lib
from keras_compress.clustering import wrapper as wrapper_lib
from keras_compress.pruning import registry

logger = logging.getLogger("keras_compress")


def _make_selector(layers_to_cluster, all_layers):
    """Turns `layers_to_cluster` into `select(layer) -> bool` and checks it."""
    return rewrite.layer_selector(
        layers_to_cluster,
        all_layers,
        "layers_to_cluster",
        registry.is_prunable,
        wrapper_lib.clusterable_weights,  # raises if the layer has none
    )


def _check_layer(layer, params):
    """Checks a layer's weights against the clustering arguments."""
    for weight in wrapper_lib.clusterable_weights(layer):
        wrapper_lib.check_weight_count(
            layer, weight, params["number_of_clusters"], params["per_channel"]
        )


def cluster_weights(
    to_cluster,
    number_of_clusters,
    cluster_centroids_init="kmeans++",
    preserve_sparsity=False,
    per_channel=False,
    layers_to_cluster=None,
    seed=0,
    **kwargs,
):
    """Makes the weights of a model (or layer) share a few values each.

    Each clustered weight holds `number_of_clusters` distinct values once
    stripped; the file then compresses several times better (gzip, or
    LiteRT's int8 with the weights already on a few levels). The centroids
    train with the model; fine-tune a few epochs at a low learning rate,
    then call `strip_clustering`.

    - Sequential and Functional models (nested ones too) are copied with
      each selected layer wrapped in `ClusterWeights`.
    - Subclassed models are copied and owned by a `ClusteredModel`, which
      routes the selected layers through their wrappers.
    - A layer returns a `ClusterWeights` wrapper; a list, a list of them.

    Args:
        to_cluster: A built `keras.Model`, a layer, or a list of layers.
        number_of_clusters: Shared values per weight, an integer >= 2 and
            at most the weight's number of values.
        cluster_centroids_init: `"kmeans++"` (default), `"linear"`,
            `"density"` or `"random"`.
        preserve_sparsity: Keep zero weights (e.g. after pruning) at
            exactly zero: they become one extra, fixed cluster.
        per_channel: Separate centroids for each slice of the last axis
            (the output channels of Dense/convolution kernels).
        layers_to_cluster: `None` (every layer with weights to cluster), a
            list of layer names (each must have some), or a callable
            `f(layer) -> bool`.
        seed: Seed of the centroid initialization.
        **kwargs: Unsupported; raises with the names.

    Returns:
        A new model, layer or list of layers. The input is unchanged.

    Raises:
        ValueError: For `number_of_clusters` < 2 or above a layer's number
            of weights, an unknown `cluster_centroids_init`, or a layer
            named in `layers_to_cluster` that has nothing to cluster.

    Example:

    ```python
    clustered = kc.clustering.cluster_weights(model, number_of_clusters=16)
    clustered.compile(keras.optimizers.Adam(1e-4), loss, ["accuracy"])
    clustered.fit(x, y, epochs=2)
    small = kc.clustering.strip_clustering(clustered)
    ```
    """
    if kwargs:
        raise TypeError(
            f"cluster_weights() got unexpected arguments {sorted(kwargs)}."
        )
    wrapper_lib.check_number_of_clusters(number_of_clusters)
    centroids_lib.check_init(cluster_centroids_init)
    params = {
        "number_of_clusters": int(number_of_clusters),
        "cluster_centroids_init": cluster_centroids_init,
        "preserve_sparsity": bool(preserve_sparsity),
        "per_channel": bool(per_channel),
        "seed": int(seed),
    }
    if isinstance(to_cluster, (list, tuple)):
        return [
            cluster_weights(layer, layers_to_cluster=None, **params)
            for layer in to_cluster
        ]
    if not isinstance(to_cluster, keras.layers.Layer):
        raise ValueError(
            "cluster_weights() takes a keras.Model, a keras.layers.Layer or "
            f"a list of layers; received {type(to_cluster).__name__}."
        )
    if not isinstance(to_cluster, keras.Model):
        if isinstance(to_cluster, wrapper_lib.ClusterWeights):
            raise ValueError(f"Layer '{to_cluster.name}' is already clustered.")
        if to_cluster.built:
            _check_layer(to_cluster, params)
            to_cluster = rewrite.copy_layer(to_cluster)
        return wrapper_lib.ClusterWeights(to_cluster, **params)

    model = to_cluster
    rewrite.check_built(model)
    for _, layer in rewrite.iter_layers(model, include_models=True):
        if hasattr(layer, "get_pruners") or isinstance(
            layer,
            (wrapper_lib.ClusterWeights, clustered_model_lib.ClusteredModel),
        ):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) is already "
                "wrapped for pruning or clustering. Strip it first "
                "(strip_pruning / strip_clustering); use "
                "preserve_sparsity=True to keep pruned zeros."
            )
    select, named = _make_selector(
        layers_to_cluster, rewrite.leaf_layers(model)
    )

    def should_cluster(layer):
        if not select(layer) or not registry.is_prunable(layer):
            return False
        _check_layer(layer, params)
        return True

    result, clustered_names = clustered_model_lib.ClusteredModel.wrap_layers(
        model,
        should_cluster,
        lambda layer, p: wrapper_lib.ClusterWeights(layer, **p),
        params,
        is_unit=registry.is_prunable,
    )
    if not clustered_names:
        raise ValueError(
            f"Model '{model.name}' has no layer to cluster with "
            f"layers_to_cluster={layers_to_cluster!r}. Clusterable layers: "
            "Dense, EinsumDense, Conv*, DepthwiseConv2D, SeparableConv*, "
            "Embedding, SimpleRNN/LSTM/GRU."
        )
    missing = named - set(clustered_names)
    if missing:
        raise ValueError(f"Could not cluster layers {sorted(missing)}.")
    return result


def strip_clustering(model):
    """Returns a plain copy of `model` whose weights hold the clustered values.

    Each clustered weight of the copy has at most `number_of_clusters`
    distinct values (per channel with `per_channel`; plus 0 with
    `preserve_sparsity`). The copy has no wrappers or centroids and
    converts like the original model; `unique_values_report` lists what
    each weight holds.

    Args:
        model: A model from `cluster_weights` (or any model containing
            `ClusterWeights` layers or a `ClusteredModel`), or a
            `ClusterWeights` layer.

    Returns:
        A new model (or layer) of the original architecture.

    Example:

    ```python
    small = kc.clustering.strip_clustering(clustered)
    print(kc.clustering.unique_values_report(small))
    ```
    """
    return clustered_model_lib.ClusteredModel.strip_layers(
        model,
        wrapper_lib.ClusterWeights,
        _write_clustered,
        ("strip_clustering", "cluster_weights"),
    )


def _write_clustered(wrapper, layer_copy):
    """Assigns the wrapper's clustered values to the copy's weights."""
    for weight, value in zip(
        registry.get_prunable_weights(layer_copy), wrapper.clustered_values()
    ):
        weight.assign(value)
