"""`ClusterWeights`: the layer wrapper that shares a few values per weight.

How a clustered weight is computed in each forward pass:

1. Each weight value is assigned to its nearest centroid (recomputed
   every step, so the assignment follows the weights as they train).
2. The wrapped layer runs its own `call` with `centroids[assignment]` in
   place of its variable (a `keras.StatelessScope`: the layer's code runs
   unchanged, for every layer type).
3. Gradients: the centroids get the sum of the gradients of the weights
   assigned to them (the gather's gradient, as in "Deep Compression"), and
   the original weights get the gradient of their clustered value
   unchanged (a straight-through estimator), so they drift and can move to
   another cluster.

The original weights stay in the wrapped layer's variables; `strip_clustering`
writes the clustered values into a plain copy. With `preserve_sparsity`, a
0/1 mask taken from the weights when the wrapper is built keeps the zeros
of a pruned layer at exactly zero (in the clustered value, and in the
variable after each optimizer step, as pruning does).

All of it is plain `keras.ops` on variables: nothing to special-case for
XLA, `tf.distribute` or mixed precision.
"""

import keras
import numpy as np
from keras import ops

from keras_compress import core
from keras_compress.clustering import centroids as centroids_lib
from keras_compress.pruning import registry

_PACKAGE = "keras_compress"


def check_number_of_clusters(number_of_clusters):
    """Raises a ValueError unless it is an integer >= 2."""
    if (
        isinstance(number_of_clusters, bool)
        or not isinstance(number_of_clusters, (int, np.integer))
        or number_of_clusters < 2
    ):
        raise ValueError(
            "`number_of_clusters` must be an integer >= 2 (one shared value "
            "per layer would erase it); received "
            f"number_of_clusters={number_of_clusters!r}."
        )


def clusterable_weights(layer):
    """The variables of `layer` that clustering shares, or a ValueError.

    The same weights pruning masks (see `keras_compress.pruning.registry`):
    kernels of Dense and convolutions, SeparableConv's pointwise kernel,
    embeddings, RNN kernels; a custom layer can name its own through
    `get_prunable_weights()`. Biases are never clustered.
    """
    weights = registry.get_prunable_weights(layer) if layer.built else None
    if not weights:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no weights "
            "to cluster. Clusterable: Dense, EinsumDense, Conv1D/2D/3D, "
            "Conv*Transpose, DepthwiseConv2D, SeparableConv*, Embedding, "
            "SimpleRNN/LSTM/GRU, or a layer defining get_prunable_weights(). "
            "Leave it out of `layers_to_cluster`."
        )
    return weights


def check_weight_count(layer, weight, number_of_clusters, per_channel):
    """Raises a ValueError if `weight` has fewer values than clusters."""
    shape = tuple(weight.shape)
    count = int(np.prod(shape)) if shape else 1
    if per_channel and shape:
        count //= shape[-1]
    if count < number_of_clusters:
        where = "per output channel" if per_channel else "in total"
        raise ValueError(
            f"Layer '{layer.name}', weight '{weight.name}' (shape {shape}) "
            f"has {count} values {where}, fewer than "
            f"number_of_clusters={number_of_clusters}. Use fewer clusters "
            "or leave this layer out of `layers_to_cluster`."
        )


def clustered_value(weight, centroids, mask=None):
    """The clustered value of `weight`, with gradients to both inputs.

    Args:
        weight: The original weight tensor; its last axis is the channel
            axis when `centroids` has more than one row.
        centroids: `(channels, k)` centroids; `channels` is 1 or the size
            of the last axis of `weight`.
        mask: Optional 0/1 tensor shaped like `weight`: zeros stay zero.

    Returns:
        A float32 tensor shaped like `weight` holding only centroid values
        (and zeros where `mask` is 0).
    """
    weight = ops.cast(weight, "float32")
    centroids = ops.cast(centroids, "float32")
    shape = ops.shape(weight)
    channels, k = centroids.shape
    flat = ops.reshape(weight, (-1, channels))
    # The nearest centroid, found by counting the midpoints between sorted
    # centroids that a weight exceeds: k comparisons per weight and a
    # gather (whose gradient is a cheap segment sum), instead of k
    # distances, an argmin and a gather over a (weights x k) table.
    order = ops.argsort(centroids, axis=-1)
    ordered = ops.take_along_axis(centroids, order, axis=-1)
    midpoints = (ordered[:, 1:] + ordered[:, :-1]) / 2
    rank = ops.sum(
        ops.cast(flat[..., None] > midpoints[None], "int32"), axis=-1
    )
    offsets = ops.arange(channels, dtype="int32")[None] * k
    shared = ops.take(ops.reshape(ordered, (-1,)), rank + offsets)
    # Straight-through: the original weight gets the clustered weight's
    # gradient, so it keeps training and may change cluster. (The
    # parentheses matter: `flat - flat` is exactly 0, `shared + flat - flat`
    # is not always `shared`.)
    shared = shared + (flat - ops.stop_gradient(flat))
    shared = ops.reshape(shared, shape)
    if mask is not None:
        shared = shared * ops.cast(mask, shared.dtype)
    return shared


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClusterWeights(core.CompressionWrapper):
    """Trains a layer whose weights share `number_of_clusters` values.

    Usually created by `cluster_weights`; use it directly to cluster a
    layer of a model you write yourself.

    Args:
        layer: The layer to cluster (see `clusterable_weights`).
        number_of_clusters: Shared values per weight (per output channel
            with `per_channel`), an integer >= 2.
        cluster_centroids_init: `"kmeans++"`, `"linear"`, `"density"` or
            `"random"` (see `keras_compress.clustering.centroids`).
        preserve_sparsity: Keep the zero weights (of a pruned layer) at
            exactly zero; they form one extra cluster.
        per_channel: One set of centroids per slice of the weight's last
            axis (the output channels of Dense and convolution kernels).
        seed: Seed of the centroid initialization.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    ```python
    inputs = keras.Input((784,))
    x = kc.clustering.ClusterWeights(
        keras.layers.Dense(256, activation="relu"), number_of_clusters=16
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    ```
    """

    def __init__(
        self,
        layer,
        number_of_clusters,
        cluster_centroids_init="kmeans++",
        preserve_sparsity=False,
        per_channel=False,
        seed=0,
        **kwargs,
    ):
        if core.wrapper.is_wrappable(layer) and not registry.is_prunable(layer):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                "weights to cluster. Wrap Dense, EinsumDense, Conv*, "
                "DepthwiseConv2D, SeparableConv*, Embedding or RNN layers, "
                "or give your layer a get_prunable_weights() method."
            )
        check_number_of_clusters(number_of_clusters)
        centroids_lib.check_init(cluster_centroids_init)
        if core.wrapper.is_wrappable(layer):
            kwargs.setdefault("name", f"cluster_{layer.name}")
        super().__init__(layer, **kwargs)
        self.number_of_clusters = int(number_of_clusters)
        self.cluster_centroids_init = cluster_centroids_init
        self.preserve_sparsity = bool(preserve_sparsity)
        self.per_channel = bool(per_channel)
        self.seed = int(seed)
        # Not tracked: these variables belong to the wrapped layer.
        object.__setattr__(self, "_clustered", [])
        self._centroids = []
        self._masks = []

    technique = "clustering"

    def build(self, input_shape=None):
        super().build(input_shape)
        weights = clusterable_weights(self.layer)
        centroids, masks = [], []
        for weight in weights:
            check_weight_count(
                self.layer, weight, self.number_of_clusters, self.per_channel
            )
            values = np.asarray(ops.convert_to_numpy(weight), "float32")
            channels = values.shape[-1] if self.per_channel else 1
            columns = values.reshape(-1, channels)
            initial = np.stack(
                [
                    centroids_lib.init_centroids(
                        column[column != 0]
                        if self.preserve_sparsity
                        else column,
                        self.number_of_clusters,
                        self.cluster_centroids_init,
                        self.seed,
                    )
                    for column in columns.T
                ]
            )
            centroids.append(
                self.add_weight(
                    name=f"{weight.name}_centroids",
                    shape=initial.shape,
                    dtype="float32",
                    initializer=keras.initializers.Constant(initial),
                    trainable=True,
                )
            )
            if self.preserve_sparsity:
                mask = core.add_mask(self, weight)
                mask.assign((values != 0).astype(mask.dtype))
                masks.append(mask)
        object.__setattr__(self, "_clustered", weights)
        self._centroids = centroids
        self._masks = masks

    def call(self, inputs, *args, training=None, mask=None, **kwargs):
        if mask is not None:
            kwargs["mask"] = mask
        values = {
            id(weight): value
            for weight, value in zip(self._clustered, self.clustered_values())
        }
        return self.call_layer(
            inputs, args, kwargs, training=training, values=values
        )

    def clustered_values(self):
        """The clustered value of each weight in `clustered_weights`."""
        masks = self._masks or [None] * len(self._clustered)
        return [
            ops.cast(clustered_value(weight, centroids, mask), weight.dtype)
            for weight, centroids, mask in zip(
                self._clustered, self._centroids, masks
            )
        ]

    @property
    def clustered_weights(self):
        """The wrapped layer's variables that are clustered."""
        return list(self._clustered)

    @property
    def cluster_centroids(self):
        """The `(channels, number_of_clusters)` centroid variables."""
        return list(self._centroids)

    @property
    def sparsity_masks(self):
        """The 0/1 masks (with `preserve_sparsity`), else an empty list."""
        return list(self._masks)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "number_of_clusters": self.number_of_clusters,
                "cluster_centroids_init": self.cluster_centroids_init,
                "preserve_sparsity": self.preserve_sparsity,
                "per_channel": self.per_channel,
                "seed": self.seed,
            }
        )
        return config
