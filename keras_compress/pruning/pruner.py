"""The pruning state of one layer: masks, step and how they are kept.

How pruned weights stay exactly zero, with no cost in the forward pass:

1. When masks change (in `UpdatePruningStep`, between batches), the weights
   are multiplied by their masks in place.
2. After every optimizer step, Keras applies each variable's `constraint`;
   we install one that multiplies by the mask (composed with any constraint
   the user had), so whatever the optimizer's momentum does to a pruned
   weight is undone inside the same train step. On JAX, whose stateless
   optimizer step cannot read the mask, the layer computes with
   `weight * mask` instead and the variables are masked again whenever the
   callback syncs with the host (see `keras_compress.core.constraints`).

So the variables themselves are always sparse: the layer runs unchanged
(no `kernel * mask` in `call`, nothing for XLA or `tf.distribute` to special
case), a checkpoint saved at any point holds zeros (tfmot saves dense
weights mid-training, its issue 206), and stripping only drops the masks.

Both owners of this state, the `PruneLowMagnitude` wrapper and the
`PrunedModel` used for subclassed models, create the variables through
`create_variables` in their `build()`, so that `.keras` files restore them.
"""

import keras
from keras import ops

from keras_compress.core import constraints as constraints_lib
from keras_compress.pruning import masks as masks_lib
from keras_compress.pruning import registry


def n_m_misfit(weight, sparsity_m_by_n, axis=-2):
    """Why N:M sparsity cannot apply to `weight` along its input-channel
    `axis` (`registry.input_channel_axis`), or None if it can."""
    _, m = sparsity_m_by_n
    shape = tuple(weight.shape)
    if len(shape) < 2:
        return f"has shape {shape}; N:M sparsity needs rank >= 2"
    if shape[axis] % m:
        return (
            f"has {shape[axis]} input channels (axis {axis} of shape "
            f"{shape}), which m={m} does not divide"
        )
    return None


class LayerPruner:
    """Masks, step counter and mask updates for the prunable weights of a layer.

    Args:
        layer: The layer whose weights are pruned (built before
            `create_variables`).
        pruning_schedule: A `PruningSchedule`.
        block_size: `(rows, cols)`; `(1, 1)` prunes single weights.
        block_pooling_type: `"AVG"` or `"MAX"`, how a block is scored.
        sparsity_m_by_n: `(n, m)`, e.g. `(2, 4)`, or None. Keeps `n` of
            every `m` weights along the input-channel axis; the schedule then
            only decides when the pattern is applied.
    """

    def __init__(
        self,
        layer,
        pruning_schedule,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
    ):
        self.layer = layer
        self.schedule = pruning_schedule
        self.block_size = tuple(block_size)
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = (
            tuple(sparsity_m_by_n) if sparsity_m_by_n else None
        )
        self.weights = []
        self.masks = []
        self._axes = []
        self.step = None
        # Set by UpdatePruningStep.on_train_begin; checked when a training
        # graph is traced, so that a forgotten callback is an error instead
        # of a model that silently never prunes.
        self.callback_attached = False
        self._host_step = None

    def create_variables(self, owner):
        """Creates masks and step on `owner` and installs the constraints.

        Args:
            owner: The `keras.layers.Layer` that tracks (and saves) them.
        """
        weights = registry.get_prunable_weights(self.layer)
        if weights is None:
            raise ValueError(
                f"Layer '{self.layer.name}' ({type(self.layer).__name__}) has "
                "no prunable weights. Prunable: Dense, EinsumDense, Conv*, "
                "DepthwiseConv2D, SeparableConv*, Embedding, SimpleRNN/LSTM/"
                "GRU, MultiHeadAttention, or any layer that defines "
                "get_prunable_weights()."
            )
        self._axes = [
            registry.input_channel_axis(self.layer, weight)
            for weight in weights
        ]
        for weight, axis in zip(weights, self._axes):
            self._check_weight(weight, axis)
        self.weights = weights
        self.masks = [
            constraints_lib.add_mask(owner, weight) for weight in weights
        ]
        self.step = owner.add_weight(
            name="pruning_step",
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
        )

    def _check_weight(self, weight, axis):
        name = f"layer '{self.layer.name}', weight '{weight.name}'"
        if self.block_size != (1, 1) and len(weight.shape) < 2:
            raise ValueError(
                f"block_size={self.block_size} needs weights of rank >= 2; "
                f"{name} has shape {tuple(weight.shape)}."
            )
        if self.sparsity_m_by_n:
            reason = n_m_misfit(weight, self.sparsity_m_by_n, axis)
            if reason:
                raise ValueError(
                    f"sparsity_m_by_n={self.sparsity_m_by_n}: {name} "
                    f"{reason}. Leave this layer out of pruning or choose an "
                    "m that divides its input channels."
                )

    # Host-side step bookkeeping (called from the callback, eagerly).

    def on_train_begin(self):
        self.callback_attached = True
        self._host_step = int(ops.convert_to_numpy(self.step))

    def on_train_end(self):
        self.callback_attached = False

    def _current_step(self):
        if self._host_step is None:
            self._host_step = int(ops.convert_to_numpy(self.step))
        return self._host_step

    def next_step_updates_masks(self):
        """Whether the next `advance()` recomputes the masks."""
        return self.schedule.should_update(self._current_step() + 1)

    def advance(self, write_step=True):
        """Moves to the next step, updating masks if the schedule says so.

        Args:
            write_step: Also write the step to its variable. The callback
                passes False on JAX between mask updates, where the
                variables are not synced with the host (`write_state`
                writes it later).

        Returns:
            The new step.
        """
        self._host_step = self._current_step() + 1
        step = self._host_step
        if self.schedule.should_update(step):
            self.update_masks(self.schedule.sparsity_at(step))
            write_step = True
        if write_step:
            self.step.assign(step)
        return step

    def write_state(self):
        """Writes the host step and masks the weights (after a JAX sync)."""
        if self._host_step is not None:
            self.step.assign(self._host_step)
        self.apply_masks()

    def compute_mask(self, weight, sparsity, axis=-2):
        """The mask this pruner's settings give for `weight` at `sparsity`
        (`axis`: its input channels, for N:M sparsity)."""
        if self.sparsity_m_by_n:
            n, m = self.sparsity_m_by_n
            return masks_lib.n_m_mask(weight, n, m, axis)
        if self.block_size != (1, 1):
            return masks_lib.block_mask(
                weight, sparsity, self.block_size, self.block_pooling_type
            )
        return masks_lib.magnitude_mask(weight, sparsity)

    def update_masks(self, sparsity):
        """Recomputes every mask at `sparsity` and zeros the pruned weights.

        Scores the masked weights: on JAX a pruned weight's variable may
        have drifted since the last sync (see the module docstring), but
        it was zero in every forward pass, as on the other backends.
        """
        if not self.sparsity_m_by_n and sparsity <= 0.0:
            return
        for weight, mask, axis in zip(self.weights, self.masks, self._axes):
            masked = weight.value * ops.cast(mask.value, weight.dtype)
            new_mask = self.compute_mask(masked, sparsity, axis)
            mask.assign(new_mask)
            weight.assign(masked * new_mask)

    def apply_masks(self):
        """Multiplies every weight by its mask (e.g. after a manual edit)."""
        for weight, mask in zip(self.weights, self.masks):
            weight.assign(weight.value * mask.value)

    def check_callback(self):
        if not self.callback_attached:
            raise RuntimeError(
                f"Layer '{self.layer.name}' is being trained with pruning, "
                "but the `keras_compress.pruning.UpdatePruningStep()` "
                "callback is missing, so the masks would never be updated. "
                "Add it: model.fit(..., callbacks=[kc.pruning."
                "UpdatePruningStep()]), after calling compile() again (the "
                "failed call left a half-traced train function behind). In "
                "a custom training loop call its set_model(), "
                "on_train_begin() and on_train_batch_begin()."
            )
