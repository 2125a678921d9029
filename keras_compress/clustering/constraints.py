"""`ClusterConstraint`: keeps a clustered weight clustered while it trains.

Used by cluster-preserving QAT (`quantize_model(..., preserve_clusters=
True)`): the cluster of each weight is fixed when QAT starts (one cluster
per distinct value of the stripped clustered kernel), and after every
optimizer step the constraint sets each weight to the mean of its
cluster. So each cluster keeps one shared value (which still trains: it
moves by the mean of its members' updates), the zero cluster of a pruned
layer stays exactly zero, and the int8 file gets no more distinct values
per channel than the float kernel had clusters.
"""

import numpy as np
from keras import ops

from keras_compress.core import constraints as constraints_lib

# Reserved cluster id: weights that are exactly zero stay exactly zero.
ZERO_CLUSTER = 0


def cluster_ids_from_values(values):
    """One int32 id per weight: 0 for zeros, 1.. for each distinct value.

    Args:
        values: A numpy array (a clustered kernel).

    Returns:
        An int32 array shaped like `values`.
    """
    values = np.asarray(values)
    _, inverse = np.unique(values, return_inverse=True)
    ids = inverse.reshape(values.shape).astype("int32") + 1
    ids[values == 0] = ZERO_CLUSTER
    return ids


class ClusterConstraint(constraints_lib.WeightConstraint):
    """Sets each weight to the mean of its cluster after an optimizer step.

    Installed on variables at build time with
    `core.install_constraint`, never serialized: the layer that owns the id
    variable re-installs it when a saved model is loaded.

    Args:
        cluster_ids: An int32 variable shaped like the weight (see
            `cluster_ids_from_values`).
        base: The constraint the variable had before (or None), applied
            first.
    """

    def __init__(self, cluster_ids, base=None):
        super().__init__(base)
        self.cluster_ids = cluster_ids

    def project(self, weight):
        shape = ops.shape(weight)
        flat = ops.reshape(weight, (-1,))
        ids = ops.reshape(ops.cast(self.cluster_ids, "int32"), (-1,))
        # At most one cluster per weight: a static bound that XLA accepts.
        segments = int(np.prod(weight.shape)) + 1
        sums = ops.segment_sum(flat, ids, num_segments=segments)
        counts = ops.segment_sum(
            ops.ones_like(flat), ids, num_segments=segments
        )
        means = sums / ops.maximum(counts, 1)
        shared = ops.take(means, ids)
        shared = ops.where(ops.equal(ids, ZERO_CLUSTER), 0, shared)
        return ops.reshape(ops.cast(shared, weight.dtype), shape)
