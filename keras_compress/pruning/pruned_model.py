"""`PrunedModel`: pruning for subclassed models, which cannot be rewired.

A subclassed model's forward pass is Python code, so its layers cannot be
swapped for wrappers in a way that survives `.keras` save and load (loading
re-runs the user's `__init__`, which creates the original layers). Pruning
does not need to change the forward pass, though (see `pruner.py`): this
model owns a copy of the user's model plus the masks and step of each
pruned layer, records in its own config which layers those are, and
re-creates the same state on load before the weights are restored.
"""

import keras

from keras_compress import rewrite
from keras_compress.pruning import pruner as pruner_lib
from keras_compress.pruning import wrapper as wrapper_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PrunedModel(rewrite.OwningModelConfig, keras.Model):
    """A model that prunes chosen layers of an inner (subclassed) model.

    Created by `prune_low_magnitude` for subclassed models; `call` runs the
    inner model unchanged. `strip_pruning` returns a copy of the inner model.

    Args:
        model: The model to prune (owned, not copied: pass a copy).
        pruned_layers: A list of dicts, one per pruned layer, with
            `"index"` (position in `model._flatten_layers()` leaf order, see
            `rewrite.leaf_layers`), `"class_name"` (checked on load) and the
            wrapper arguments `pruning_schedule`, `block_size`,
            `block_pooling_type` and `sparsity_m_by_n`.
        **kwargs: Base model arguments (`name`, ...).
    """

    def __init__(self, model, pruned_layers, **kwargs):
        kwargs.setdefault("name", f"pruned_{model.name}")
        super().__init__(**kwargs)
        self.model = model
        self.pruned_layers = [dict(entry) for entry in pruned_layers]
        for entry in self.pruned_layers:
            schedule = entry["pruning_schedule"]
            if isinstance(schedule, dict):
                entry["pruning_schedule"] = (
                    keras.saving.deserialize_keras_object(schedule)
                )
            wrapper_lib.check_pruning_params(
                entry["pruning_schedule"],
                tuple(entry.get("block_size", (1, 1))),
                entry.get("block_pooling_type", "AVG"),
                entry.get("sparsity_m_by_n"),
            )
        self._pruners = []

    def build(self, input_shape):
        layers = rewrite.recorded_leaf_layers(
            self, self.model, self.pruned_layers, input_shape
        )
        for layer, entry in zip(layers, self.pruned_layers):
            pruner = pruner_lib.LayerPruner(
                layer,
                entry["pruning_schedule"],
                tuple(entry.get("block_size", (1, 1))),
                entry.get("block_pooling_type", "AVG"),
                entry.get("sparsity_m_by_n"),
            )
            pruner.create_variables(self)
            self._pruners.append(pruner)

    def call(self, inputs, training=None):
        if training is True:
            for pruner in self._pruners:
                pruner.check_callback()
        return self.model(inputs, training=training)

    def get_pruners(self):
        """The `LayerPruner`s this model owns (for callbacks and reports)."""
        return list(self._pruners)

    def get_config(self):
        entries = []
        for entry in self.pruned_layers:
            entry = dict(entry)
            entry["pruning_schedule"] = keras.saving.serialize_keras_object(
                entry["pruning_schedule"]
            )
            entry["block_size"] = list(entry.get("block_size", (1, 1)))
            if entry.get("sparsity_m_by_n"):
                entry["sparsity_m_by_n"] = list(entry["sparsity_m_by_n"])
            entries.append(entry)
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "pruned_layers": entries,
        }
