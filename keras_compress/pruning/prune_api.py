"""`prune_low_magnitude` and `strip_pruning`: the entry points."""

import logging
import warnings

import keras

from keras_compress import rewrite
from keras_compress.core import keras_private
from keras_compress.pruning import pruned_model as pruned_model_lib
from keras_compress.pruning import pruner as pruner_lib
from keras_compress.pruning import registry
from keras_compress.pruning import wrapper as wrapper_lib
from keras_compress.pruning.schedules import ConstantSparsity

logger = logging.getLogger("keras_compress")


def _check_prunable(layer):
    if not registry.is_prunable(layer):
        raise ValueError(
            f"layers_to_prune names '{layer.name}' ({type(layer).__name__}), "
            "which has no prunable weights. Remove it from the list, or "
            "give the layer a get_prunable_weights() method."
        )


def _make_selector(layers_to_prune, all_layers):
    """Turns `layers_to_prune` into `select(layer) -> bool` and checks it."""
    return rewrite.layer_selector(
        layers_to_prune,
        all_layers,
        "layers_to_prune",
        registry.is_prunable,
        _check_prunable,
    )


def _wrap(layer, params):
    return wrapper_lib.PruneLowMagnitude(layer, **params)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    sparsity_m_by_n=None,
    layers_to_prune=None,
    pruning_policy=None,
    **kwargs,
):
    """Adds magnitude pruning to a model, a layer or a list of layers.

    Same arguments as tfmot's `prune_low_magnitude`, for Keras 3 and for
    every kind of model. The returned model must be trained with the
    `UpdatePruningStep` callback; `strip_pruning` then gives a plain model
    with the zeros baked in.

    - Sequential and Functional models (nested ones too) are copied with
      each selected layer wrapped in `PruneLowMagnitude`.
    - Subclassed models are copied and owned by a `PrunedModel`, which holds
      the masks of the selected layers (their forward pass is not changed).
    - A layer returns a `PruneLowMagnitude` wrapper; a list, a list of them.

    Args:
        to_prune: A built `keras.Model`, a layer, or a list of layers.
        pruning_schedule: A `PruningSchedule`; defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        block_size: `(rows, cols)` of the weight blocks pruned together.
        block_pooling_type: `"AVG"` or `"MAX"`: how a block is scored.
        sparsity_m_by_n: `(n, m)`, e.g. `(2, 4)`: keep `n` of every `m`
            weights along the input channels.
        layers_to_prune: Which layers of a model to prune: `None` (every
            prunable layer), a list of layer names (each must be prunable),
            or a callable `f(layer) -> bool`.
        pruning_policy: Accepted for tfmot compatibility; must be None.
        **kwargs: Unsupported; raises with the names.

    Returns:
        A new model, layer or list of layers. The input is unchanged.

    Example:

    ```python
    pruned = kc.pruning.prune_low_magnitude(
        model,
        pruning_schedule=kc.pruning.PolynomialDecay(
            0.0, 0.8, begin_step=0, end_step=2000, frequency=50))
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, callbacks=[kc.pruning.UpdatePruningStep()])
    small = kc.pruning.strip_pruning(pruned)
    ```
    """
    if kwargs:
        raise TypeError(
            f"prune_low_magnitude() got unexpected arguments {sorted(kwargs)}."
        )
    if pruning_policy is not None:
        raise ValueError(
            "pruning_policy is not supported; choose layers with "
            "`layers_to_prune` instead."
        )
    if pruning_schedule is None:
        pruning_schedule = ConstantSparsity(0.5, begin_step=0)
    block_size = tuple(block_size)
    wrapper_lib.check_pruning_params(
        pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n
    )
    params = {
        "pruning_schedule": pruning_schedule,
        "block_size": block_size,
        "block_pooling_type": block_pooling_type,
        "sparsity_m_by_n": sparsity_m_by_n,
    }

    if isinstance(to_prune, (list, tuple)):
        return [prune_low_magnitude(layer, **params) for layer in to_prune]
    if not isinstance(to_prune, keras.layers.Layer):
        raise ValueError(
            "prune_low_magnitude() takes a keras.Model, a keras.layers.Layer "
            f"or a list of layers; received {type(to_prune).__name__}."
        )
    if not isinstance(to_prune, keras.Model):
        if isinstance(to_prune, wrapper_lib.PruneLowMagnitude):
            raise ValueError(f"Layer '{to_prune.name}' is already pruned.")
        return _wrap(
            rewrite.copy_layer(to_prune) if to_prune.built else to_prune,
            params,
        )

    model = to_prune
    rewrite.check_built(model)
    select, named = _make_selector(layers_to_prune, rewrite.leaf_layers(model))
    left_dense = []

    def should_prune(layer):
        if isinstance(layer, wrapper_lib.PruneLowMagnitude):
            raise ValueError(f"Layer '{layer.name}' is already pruned.")
        if not select(layer):
            return False
        if not registry.is_prunable(layer):
            if layer.weights:
                logger.info(
                    "Not pruning layer '%s' (%s): no prunable weights.",
                    layer.name,
                    type(layer).__name__,
                )
            return False
        if sparsity_m_by_n and layer.name not in named:
            # Whole-model N:M (as NVIDIA's ASP does): where the pattern
            # does not fit, the layer stays dense and is reported; a layer
            # named explicitly gets the wrapper's error instead.
            reasons = [
                pruner_lib.n_m_misfit(
                    weight,
                    sparsity_m_by_n,
                    registry.input_channel_axis(layer, weight),
                )
                for weight in registry.get_prunable_weights(layer)
            ]
            reasons = [r for r in reasons if r]
            if reasons:
                left_dense.append(f"'{layer.name}' ({reasons[0]})")
                return False
        return True

    result, pruned_names = pruned_model_lib.PrunedModel.wrap_layers(
        model, should_prune, _wrap, params, is_unit=registry.is_prunable
    )
    if not pruned_names and left_dense:
        raise ValueError(
            f"sparsity_m_by_n={tuple(sparsity_m_by_n)} fits no layer of "
            f"model '{model.name}': {', '.join(left_dense)}. Choose an m "
            "that divides the layers' input channels."
        )
    if not pruned_names:
        raise ValueError(
            f"Model '{model.name}' has no layer to prune with "
            f"layers_to_prune={layers_to_prune!r}. Prunable layers: Dense, "
            "EinsumDense, Conv*, DepthwiseConv2D, SeparableConv*, Embedding, "
            "SimpleRNN/LSTM/GRU, MultiHeadAttention."
        )
    missing = named - set(pruned_names)
    if missing:  # e.g. a name that is also a nested model's name
        raise ValueError(f"Could not prune layers {sorted(missing)}.")
    if left_dense:
        warnings.warn(
            f"sparsity_m_by_n={tuple(sparsity_m_by_n)}: {len(left_dense)} "
            f"layer(s) left dense, the pattern does not fit them: "
            f"{', '.join(left_dense)}.",
            stacklevel=2,
        )
    return result


def prune_per_layer(model, schedules):
    """Prunes each chosen layer of `model` on its own schedule.

    What `compress()` uses to apply a per-layer sparsity plan, for every
    model kind (nested layers and layers of subclassed models included).

    Args:
        model: A built model. It is not changed.
        schedules: `{id(layer): PruningSchedule}` for layers of `model`.

    Returns:
        A pruned copy of `model`, as `prune_low_magnitude` returns.
    """
    rewrite.check_built(model)

    def params(layer):
        return {
            "pruning_schedule": schedules[id(layer)],
            "block_size": (1, 1),
            "block_pooling_type": "AVG",
            "sparsity_m_by_n": None,
        }

    def chosen(layer):
        return id(layer) in schedules

    pruned, _ = pruned_model_lib.PrunedModel.wrap_layers(
        model, chosen, _wrap, params, is_unit=registry.is_prunable
    )
    return pruned


def get_pruners(model):
    """Every `LayerPruner` inside `model` (wrappers and `PrunedModel`s)."""
    pruners = []
    for layer in keras_private.flatten_layers(model, include_self=True):
        if hasattr(layer, "get_pruners"):
            pruners.extend(layer.get_pruners())
    return pruners


def strip_pruning(model):
    """Returns a plain copy of `model` without pruning wrappers or masks.

    The pruned weights are zero in the copy (the masks are applied once
    more, in case the weights were edited by hand). Use it before export:
    the copy has no extra variables and converts like the original model.

    Args:
        model: A model from `prune_low_magnitude` (or any model containing
            `PruneLowMagnitude` layers or a `PrunedModel`).

    Returns:
        A new model of the original architecture.
    """
    return pruned_model_lib.PrunedModel.strip_layers(
        model,
        wrapper_lib.PruneLowMagnitude,
        lambda wrapper, copy: _apply_masks_to_copy(wrapper.pruner, copy),
        ("strip_pruning", "prune_low_magnitude"),
    )


def _apply_masks_to_copy(pruner, layer_copy):
    """Multiplies the copy's prunable weights by the pruner's masks."""
    weights = registry.get_prunable_weights(layer_copy)
    for weight, mask in zip(weights, pruner.masks):
        weight.assign(weight.value * mask.value)
