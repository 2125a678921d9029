"""`ClusteredModel`: clustering for subclassed models, which cannot be rewired.

A subclassed model's forward pass is Python code that uses the layers its
`__init__` created, and loading a `.keras` file runs that `__init__` again.
This model owns a copy of the user's model and, for each layer to
cluster, a `ClusterWeights` wrapper around that layer, routed into the
layer's own call by `core.OwningModel` (as for `PrunedModel` and
`QuantizedModel`).
"""

import keras

from keras_compress import core
from keras_compress.clustering import wrapper as wrapper_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClusteredModel(core.OwningModel):
    """A model that clusters chosen layers of an inner (subclassed) model.

    Created by `cluster_weights` for subclassed models; `strip_clustering`
    returns a copy of the inner model holding the clustered weights.

    Args:
        model: The model to cluster (owned, not copied: pass a copy).
        clustered_layers: A list of dicts, one per clustered layer, with
            `"index"` (position in `rewrite.leaf_layers(model)`),
            `"class_name"` (checked on load) and the `ClusterWeights`
            arguments (`number_of_clusters`, `cluster_centroids_init`,
            `preserve_sparsity`, `per_channel`, `seed`).
        **kwargs: Base model arguments (`name`, ...).
    """

    entries_key = "clustered_layers"

    def __init__(self, model, clustered_layers, **kwargs):
        kwargs.setdefault("name", f"clustered_{model.name}")
        super().__init__(model, clustered_layers, **kwargs)

    @property
    def clustered_layers(self):
        return self.entries

    def attach(self, layer, entry, input_shape):
        params = self.wrapper_arguments(entry)
        wrapper = wrapper_lib.ClusterWeights(layer, **params)
        wrapper.build()
        return wrapper
