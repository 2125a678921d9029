"""`PruneLowMagnitude`: the layer wrapper that carries pruning state."""

import keras

from keras_compress import core
from keras_compress.pruning import pruner as pruner_lib
from keras_compress.pruning import registry
from keras_compress.pruning import schedules as schedules_lib

_PACKAGE = "keras_compress"


def _check_block_size(block_size):
    if (
        not isinstance(block_size, (tuple, list))
        or len(block_size) != 2
        or not all(isinstance(b, int) and b >= 1 for b in block_size)
    ):
        raise ValueError(
            "`block_size` must be a pair of positive integers (rows, cols); "
            f"received block_size={block_size!r}."
        )


def _check_m_by_n(sparsity_m_by_n, block_size):
    if sparsity_m_by_n is None:
        return
    if (
        not isinstance(sparsity_m_by_n, (tuple, list))
        or len(sparsity_m_by_n) != 2
        or not all(isinstance(v, int) for v in sparsity_m_by_n)
        or not 0 < sparsity_m_by_n[0] < sparsity_m_by_n[1]
    ):
        raise ValueError(
            "`sparsity_m_by_n` must be a pair (n, m) of integers with "
            f"0 < n < m, e.g. (2, 4); received {sparsity_m_by_n!r}."
        )
    if tuple(block_size) != (1, 1):
        raise ValueError(
            "`sparsity_m_by_n` and `block_size` cannot be combined; received "
            f"sparsity_m_by_n={sparsity_m_by_n!r}, block_size={block_size!r}."
        )


def check_pruning_params(
    pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n
):
    """Validates the pruning arguments before any model is touched."""
    if not isinstance(pruning_schedule, schedules_lib.PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a keras_compress.pruning."
            "PruningSchedule (e.g. ConstantSparsity or PolynomialDecay); "
            f"received {pruning_schedule!r}."
        )
    _check_block_size(block_size)
    if block_pooling_type not in ("AVG", "MAX"):
        raise ValueError(
            "`block_pooling_type` must be 'AVG' or 'MAX'; received "
            f"{block_pooling_type!r}."
        )
    _check_m_by_n(sparsity_m_by_n, block_size)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PruneLowMagnitude(core.CompressionWrapper):
    """Prunes the weights of the wrapped layer by magnitude during training.

    The wrapper owns one 0/1 mask per prunable weight and a step counter.
    The `UpdatePruningStep` callback advances the step and, on the schedule's
    steps, recomputes the masks; the wrapped layer's weights are kept equal
    to `weight * mask` at all times (see `keras_compress.pruning.pruner`),
    so the layer runs unchanged in the forward pass.

    Usually created by `prune_low_magnitude`; use it directly to prune a
    layer inside a model you write yourself.

    Args:
        layer: The layer to prune (see `registry.get_prunable_weights` for
            the supported types).
        pruning_schedule: A `PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        block_size: `(rows, cols)` of the blocks pruned together.
        block_pooling_type: `"AVG"` or `"MAX"`: how a block is scored.
        sparsity_m_by_n: `(n, m)` for N:M sparsity along the input channels,
            e.g. `(2, 4)`; the schedule then only decides when.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    ```python
    inputs = keras.Input((784,))
    x = kc.pruning.PruneLowMagnitude(
        keras.layers.Dense(256, activation="relu"),
        pruning_schedule=kc.pruning.ConstantSparsity(0.8, 0, frequency=50),
    )(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    ```
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
        **kwargs,
    ):
        if pruning_schedule is None:
            pruning_schedule = schedules_lib.ConstantSparsity(0.5, 0)
        if isinstance(pruning_schedule, dict):
            pruning_schedule = keras.saving.deserialize_keras_object(
                pruning_schedule
            )
        if core.wrapper.is_wrappable(layer) and not registry.is_prunable(layer):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has no "
                "prunable weights. Wrap Dense, EinsumDense, Conv*, "
                "DepthwiseConv2D, SeparableConv*, Embedding, RNN or "
                "MultiHeadAttention layers, or give your layer a "
                "get_prunable_weights() method."
            )
        block_size = tuple(block_size)
        check_pruning_params(
            pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n
        )
        if core.wrapper.is_wrappable(layer):
            kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = block_size
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = (
            tuple(sparsity_m_by_n) if sparsity_m_by_n else None
        )
        self.pruner = pruner_lib.LayerPruner(
            layer,
            pruning_schedule,
            block_size,
            block_pooling_type,
            self.sparsity_m_by_n,
        )

    technique = "pruning"

    def build(self, input_shape=None):
        super().build(input_shape)
        self.pruner.create_variables(self)

    def build_state_on(self, owner):
        """Builds the wrapper with its masks and step kept on `owner`.

        For `PrunedModel`, which has always saved them as its own
        variables (so `.keras` files keep loading).
        """
        self.pruner.create_variables(owner)
        self.built = True

    def call(self, inputs, *args, training=None, mask=None, **kwargs):
        if training is True:
            self.pruner.check_callback()
        if mask is not None:
            kwargs["mask"] = mask
        return self.call_layer(inputs, args, kwargs, training=training)

    @property
    def prunable_weights(self):
        """The wrapped layer's variables that are masked."""
        return list(self.pruner.weights)

    @property
    def pruning_masks(self):
        """The mask variables, in the order of `prunable_weights`."""
        return list(self.pruner.masks)

    def get_pruners(self):
        """The `LayerPruner`s this object owns (for callbacks and reports)."""
        return [self.pruner] if self.built else []

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": keras.saving.serialize_keras_object(
                    self.pruning_schedule
                ),
                "block_size": list(self.block_size),
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": (
                    list(self.sparsity_m_by_n) if self.sparsity_m_by_n else None
                ),
            }
        )
        return config
