"""Weight clustering (parameter sharing) for Keras 3.

Each clustered weight shares a few trained values; the stripped model's
file compresses several times better, and clustering combines with
pruning (`preserve_sparsity=True`) and with QAT
(`keras_compress.quantization.quantize_model(..., preserve_clusters=True)`).

Example:

```python
import keras_compress as kc

clustered = kc.clustering.cluster_weights(model, number_of_clusters=16)
clustered.compile(...)
clustered.fit(x, y, epochs=2)
small = kc.clustering.strip_clustering(clustered)
```
"""

from keras_compress.clustering.centroids import CENTROID_INITS
from keras_compress.clustering.centroids import init_centroids
from keras_compress.clustering.cluster_api import cluster_weights
from keras_compress.clustering.cluster_api import strip_clustering
from keras_compress.clustering.clustered_model import ClusteredModel
from keras_compress.clustering.constraints import ClusterConstraint
from keras_compress.clustering.constraints import cluster_ids_from_values
from keras_compress.clustering.report import unique_values_report
from keras_compress.clustering.wrapper import ClusterWeights

__all__ = [
    "CENTROID_INITS",
    "ClusterConstraint",
    "ClusterWeights",
    "ClusteredModel",
    "cluster_ids_from_values",
    "cluster_weights",
    "init_centroids",
    "strip_clustering",
    "unique_values_report",
]
