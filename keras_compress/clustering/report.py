"""`unique_values_report`: how many distinct values each weight holds."""

import numpy as np

from keras_compress import rewrite
from keras_compress.pruning import registry


def unique_values_report(model):
    """Counts the distinct values of every clusterable weight of `model`.

    Use it on a stripped model (`strip_clustering`) or on the same weights
    read back from a converted file.

    Args:
        model: A built `keras.Model`.

    Returns:
        A list of dicts, one per weight, with `"layer"` (path), `"weight"`,
        `"shape"`, `"unique_values"` (in the whole weight),
        `"max_unique_per_channel"` (over slices of the last axis) and
        `"sparsity"` (fraction of exact zeros).

    Example:

    ```python
    for row in kc.clustering.unique_values_report(stripped):
        print(row["layer"], row["unique_values"])
    ```
    """
    rows = []
    for path, layer in rewrite.iter_layers(model):
        if not layer.built or not registry.is_prunable(layer):
            continue
        for weight in registry.get_prunable_weights(layer) or []:
            values = np.asarray(weight.numpy())
            columns = values.reshape(-1, values.shape[-1] if values.ndim else 1)
            rows.append(
                {
                    "layer": path,
                    "weight": weight.name,
                    "shape": tuple(values.shape),
                    "unique_values": int(np.unique(values).size),
                    "max_unique_per_channel": int(
                        max(np.unique(c).size for c in columns.T)
                    ),
                    "sparsity": float(np.mean(values == 0)),
                }
            )
    return rows
