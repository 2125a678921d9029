"""`PrunedModel`: pruning for subclassed models, which cannot be rewired.

A subclassed model's forward pass is Python code, so its layers cannot be
swapped for wrappers in a way that survives `.keras` save and load (loading
re-runs the user's `__init__`, which creates the original layers). Pruning
is done by the same `PruneLowMagnitude` wrappers, routed into the layers'
own calls by `core.OwningModel`, which records in its config which layers
those are and re-creates the same state on load before the weights are
restored.
"""

import keras

from keras_compress import core
from keras_compress.pruning import wrapper as wrapper_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PrunedModel(core.OwningModel):
    """A model that prunes chosen layers of an inner (subclassed) model.

    Created by `prune_low_magnitude` for subclassed models; `call` runs the
    inner model, each pruned layer through its `PruneLowMagnitude`
    wrapper. `strip_pruning` returns a copy of the inner model.

    Args:
        model: The model to prune (owned, not copied: pass a copy).
        pruned_layers: A list of dicts, one per pruned layer, with
            `"index"` (position in `rewrite.leaf_layers(model)`),
            `"class_name"` (checked on load) and the wrapper arguments
            `pruning_schedule`, `block_size`, `block_pooling_type` and
            `sparsity_m_by_n`.
        **kwargs: Base model arguments (`name`, ...).
    """

    entries_key = "pruned_layers"

    def __init__(self, model, pruned_layers, **kwargs):
        kwargs.setdefault("name", f"pruned_{model.name}")
        entries = []
        for entry in pruned_layers:
            entry = dict(entry)
            schedule = entry["pruning_schedule"]
            if isinstance(schedule, dict):
                entry["pruning_schedule"] = (
                    keras.saving.deserialize_keras_object(schedule)
                )
            entry["block_size"] = tuple(entry.get("block_size", (1, 1)))
            entry.setdefault("block_pooling_type", "AVG")
            entry.setdefault("sparsity_m_by_n", None)
            wrapper_lib.check_pruning_params(
                entry["pruning_schedule"],
                entry["block_size"],
                entry["block_pooling_type"],
                entry["sparsity_m_by_n"],
            )
            entries.append(entry)
        super().__init__(model, entries, **kwargs)

    @property
    def pruned_layers(self):
        return self.entries

    def attach(self, layer, entry, input_shape):
        params = self.wrapper_arguments(entry)
        wrapper = wrapper_lib.PruneLowMagnitude(layer, **params)
        # Masks and steps stay this model's own variables, as in the files
        # earlier releases wrote.
        wrapper.build_state_on(self)
        return wrapper

    def track_wrappers(self, wrappers):
        object.__setattr__(self, "wrappers", wrappers)

    def call(self, inputs, *args, training=None, **kwargs):
        if training is True:
            for pruner in self.get_pruners():
                pruner.check_callback()
        return super().call(inputs, *args, training=training, **kwargs)

    def get_pruners(self):
        """The `LayerPruner`s this model owns (for callbacks and reports)."""
        return [wrapper.pruner for wrapper in self.wrappers]

    def serialized_entries(self):
        entries = []
        for entry in self.entries:
            entry = dict(entry)
            entry["pruning_schedule"] = keras.saving.serialize_keras_object(
                entry["pruning_schedule"]
            )
            entry["block_size"] = list(entry["block_size"])
            if entry.get("sparsity_m_by_n"):
                entry["sparsity_m_by_n"] = list(entry["sparsity_m_by_n"])
            entries.append(entry)
        return entries
