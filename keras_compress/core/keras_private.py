"""Every use of private Keras API in keras_compress, in one small module.

Keras 3 has no public way to walk a Functional graph node by node, to find
the layer that produced a symbolic tensor, to list a layer's direct
sub-layers, to sync a JAX model's state from inside a callback, or to
read what a MultiHeadAttention computes with (its einsum equations, query
scale and masking) or how a causal Conv1D pads. The techniques need them
all. Keeping them here means a Keras upgrade that
moves one of them breaks one file, and the tests of this file say which.
Two more are imported as they are: `LossFunctionWrapper` (the base of
Keras's own function losses, which the distillation losses extend) and
`unscale_loss_for_distribution` (what Keras's train step does to a loss
under `tf.distribute`).
"""

import dataclasses

import keras
from keras.src.applications import convnext
from keras.src.backend.common import global_state
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.losses.losses import LossFunctionWrapper
from keras.src.models.functional import Functional
from keras.src.ops import numpy as numpy_ops

__all__ = [
    "APPLICATIONS_LAYER_SCALE",
    "APPLICATIONS_STOCHASTIC_DEPTH",
    "AttentionInternals",
    "Functional",
    "LossFunctionWrapper",
    "attention_internals",
    "causal_padding",
    "unscale_loss_for_distribution",
    "call_has_training_arg",
    "child_layers",
    "current_training",
    "distribution_strategy",
    "flatten_layers",
    "has_been_called",
    "merge_layer_class",
    "functional_graph",
    "inbound_node",
    "nodes_by_depth",
    "producer",
    "producer_history",
    "sync_jax_state",
    "mark_jax_state_changed",
]


def current_training():
    """The `training` value of the outermost Keras call in progress."""
    context = global_state.get_global_attribute("current_call_ctx")
    return None if context is None else context.get_value("training")


def call_has_training_arg(layer):
    """Whether `layer.call` takes a `training` argument."""
    return layer._call_has_training_arg


def child_layers(layer):
    """The direct sub-layers of `layer`, in tracking order."""
    return list(layer._layers)


def own_variables(layer):
    """The variables `layer` created itself, not those of its sub-layers."""
    return list(layer._trainable_variables) + list(
        layer._non_trainable_variables
    )


def flatten_layers(layer, include_self=True):
    """`layer` and all layers inside it, depth first, each once."""
    return list(layer._flatten_layers(include_self=include_self))


def functional_graph(model):
    """The Functional graph of a Sequential or Functional model, or None."""
    if isinstance(model, keras.Sequential):
        return model._functional
    return model if isinstance(model, Functional) else None


def run_through_graph(graph, inputs, call_fn):
    """Runs a Functional graph on `inputs`, each layer call through
    `call_fn(layer, *args, **kwargs)` (Keras's own graph walk)."""
    return graph._run_through_graph(inputs, call_fn=call_fn)


def inputs_structure(graph):
    """The nest (a tensor, list or dict) a Functional graph's inputs form."""
    return graph._inputs_struct


def nodes_by_depth(graph):
    """`{depth: [node, ...]}` of a Functional graph."""
    return graph._nodes_by_depth


def producer_history(tensor):
    """The `(operation, node_index, tensor_index)` of a symbolic tensor."""
    return getattr(tensor, "_keras_history", None)


def producer(tensor):
    """The layer whose output the symbolic `tensor` is, or None."""
    history = producer_history(tensor)
    return None if history is None else history.operation


def inbound_node(layer, index):
    """The `index`-th call node of `layer` in the graphs it is used in."""
    return layer._inbound_nodes[index]


@dataclasses.dataclass(frozen=True)
class AttentionInternals:
    """What `MultiHeadAttention.call` computes with, beyond its weights.

    QAT recomputes the attention with a quantizer after each step
    (`quantization/computations.py`), and Keras has no public API for the
    einsum equations, the query scale or the masking of a built layer.
    """

    inverse_sqrt_key_dim: float
    dot_product_equation: str
    combine_equation: str
    attention_axes: tuple
    dropout: float
    dropout_layer: object
    softmax: object
    compute_attention_mask: object


def attention_internals(layer):
    """The `AttentionInternals` of a built `MultiHeadAttention` `layer`."""
    return AttentionInternals(
        inverse_sqrt_key_dim=layer._inverse_sqrt_key_dim,
        dot_product_equation=layer._dot_product_equation,
        combine_equation=layer._combine_equation,
        attention_axes=tuple(layer._attention_axes),
        dropout=layer._dropout,
        dropout_layer=layer._dropout_layer,
        softmax=layer._softmax,
        compute_attention_mask=layer._compute_attention_mask,
    )


def causal_padding(layer):
    """The `ops.pad` widths a causal `Conv1D` pads its inputs with."""
    return layer._compute_causal_padding()


# Two layers of `keras.applications` ConvNeXt that are not public Keras
# layers: `x * gamma` per channel, and a residual branch dropped in
# training (the identity in inference).
APPLICATIONS_LAYER_SCALE = convnext.LayerScale
APPLICATIONS_STOCHASTIC_DEPTH = convnext.StochasticDepth

# The operations that `x + y`, `x - y` and `x * y` on symbolic tensors put
# in a Functional graph, and the Merge layer computing the same.
_MERGE_LAYER_OF_OPERATION = {
    numpy_ops.Add: keras.layers.Add,
    numpy_ops.Subtract: keras.layers.Subtract,
    numpy_ops.Multiply: keras.layers.Multiply,
}


def merge_layer_class(node):
    """The Merge layer class computing what a graph `node` of a `keras.ops`
    Add, Subtract or Multiply of two tensors computes, else `None`."""
    merge = _MERGE_LAYER_OF_OPERATION.get(type(node.operation))
    args, kwargs = node.arguments.args, node.arguments.kwargs
    if (
        merge is None
        or kwargs
        or len(args) != 2
        or not all(isinstance(arg, keras.KerasTensor) for arg in args)
    ):
        return None
    return merge


def distribution_strategy(model):
    """The `tf.distribute` strategy `model` was created under, or `None`."""
    return getattr(model, "_distribute_strategy", None)


def has_been_called(layer):
    """Whether `layer` was ever called (Keras's exporters require it)."""
    return layer._called


def sync_jax_state(model):
    """On JAX, writes the state of a running `fit()` back to the variables.

    During `fit()` on JAX, Keras keeps the variable values in the train
    loop and leaves the `keras.Variable`s empty; a callback that reads or
    changes them must sync first. No-op on other backends.
    """
    if keras.backend.backend() == "jax" and hasattr(model, "jax_state_sync"):
        model.jax_state_sync()


def mark_jax_state_changed(model):
    """Tells a running JAX `fit()` to read the variables again.

    `jax_state_sync()` already sets this flag; set it again after changing
    variables, in case a Keras version resets it on sync.
    """
    if keras.backend.backend() == "jax":
        model._jax_state_synced = True
