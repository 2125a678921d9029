"""Small helpers shared by the clustering tests."""

import keras
import numpy as np

from keras_compress import clustering
from keras_compress.pruning import registry


def unique_counts(layer, per_channel=False):
    """Distinct values of each clusterable weight of a (stripped) layer."""
    counts = []
    for weight in registry.get_prunable_weights(layer):
        values = np.asarray(weight.numpy())
        if per_channel:
            columns = values.reshape(-1, values.shape[-1]).T
            counts.append(max(np.unique(c).size for c in columns))
        else:
            counts.append(np.unique(values).size)
    return counts


def fit_briefly(model, x, y, epochs=1, loss=None, learning_rate=1e-2):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss
        or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return history.history["loss"]


def clustered_leaf_counts(stripped, per_channel=False):
    """`{layer name: [unique counts]}` for every clusterable leaf layer."""
    return {
        row["layer"]: row[
            "max_unique_per_channel" if per_channel else "unique_values"
        ]
        for row in clustering.unique_values_report(stripped)
    }
