"""`ClusteredModel`: clustering for subclassed models, which cannot be rewired.

A subclassed model's forward pass is Python code that uses the layers its
`__init__` created, and loading a `.keras` file runs that `__init__` again.
This model owns a copy of the user's model and, for each layer to
cluster, a `ClusterWeights` wrapper around that layer; it makes the layer's
own `call` go through the wrapper (clustered weights), and records in its
config which layers those are (by position, see
`rewrite.recorded_leaf_layers`), so that loading re-creates the same state
before the weights are restored. The same mechanism as `QuantizedModel`.
"""

import keras

from keras_compress import rewrite
from keras_compress.clustering import wrapper as wrapper_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClusteredModel(rewrite.OwningModelConfig, keras.Model):
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

    def __init__(self, model, clustered_layers, **kwargs):
        kwargs.setdefault("name", f"clustered_{model.name}")
        super().__init__(**kwargs)
        self.model = model
        self.clustered_layers = [dict(entry) for entry in clustered_layers]
        self.wrappers = []

    def build(self, input_shape):
        layers = rewrite.recorded_leaf_layers(
            self, self.model, self.clustered_layers, input_shape
        )
        wrappers = []
        for layer, entry in zip(layers, self.clustered_layers):
            params = {
                k: v
                for k, v in entry.items()
                if k not in ("index", "class_name")
            }
            wrapper = wrapper_lib.ClusterWeights(layer, **params)
            wrapper.build()
            if not hasattr(layer, wrapper_lib.ORIGINAL_CALL):
                object.__setattr__(layer, wrapper_lib.ORIGINAL_CALL, layer.call)
            object.__setattr__(
                layer, "call", rewrite.CallThroughWrapper(wrapper)
            )
            wrappers.append(wrapper)
        self.wrappers = wrappers

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "clustered_layers": [dict(e) for e in self.clustered_layers],
        }
