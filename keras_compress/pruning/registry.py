"""Which weights of a layer are pruned.

Built-in layers are looked up by type; any layer (a custom one, or a
built-in whose default you want to change) can instead define
`get_prunable_weights()` returning its `keras.Variable`s. Biases and
normalization parameters are never pruned: they are few and every one
matters.

Example:

```python
class MyDense(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 8))

    def call(self, x):
        return x @ self.w

    def get_prunable_weights(self):
        return [self.w]
```
"""

import keras
from keras import layers as L

from keras_compress.core import keras_private

_KERNEL_LAYERS = (
    L.Dense,
    L.EinsumDense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
)
_RNN_LAYERS = (L.SimpleRNN, L.LSTM, L.GRU)
# Layers that hold weights but where zeroing is never what the user wants.
_NOT_PRUNABLE = (
    L.BatchNormalization,
    L.LayerNormalization,
    L.GroupNormalization,
    L.Normalization,
)


def _variable(layer, attribute):
    value = getattr(layer, attribute)
    if not isinstance(value, keras.Variable):
        # Dense.kernel becomes a tensor once LoRA is enabled or the layer is
        # quantized: there is no single variable to mask any more.
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}): `{attribute}` is "
            f"a {type(value).__name__}, not a variable (LoRA enabled or "
            "quantized?). Prune before enabling LoRA or quantizing."
        )
    return value


def get_prunable_weights(layer):
    """Returns the variables of `layer` that pruning masks, or `None`.

    Args:
        layer: A built `keras.layers.Layer`.

    Returns:
        A list of `keras.Variable`s (possibly empty, for a layer that is
        prunable but holds nothing, e.g. MultiHeadAttention before build),
        or `None` when the layer type is not prunable.
    """
    if hasattr(layer, "get_prunable_weights"):
        weights = list(layer.get_prunable_weights())
        for weight in weights:
            if not isinstance(weight, keras.Variable):
                raise ValueError(
                    f"Layer '{layer.name}': get_prunable_weights() must "
                    f"return keras.Variable objects; got {type(weight)}."
                )
        return weights
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        # The pointwise kernel holds almost all of the parameters; the
        # depthwise one has k*k per channel and pruning it hurts accuracy.
        return [_variable(layer, "pointwise_kernel")]
    if isinstance(layer, L.DepthwiseConv2D) or (
        hasattr(L, "DepthwiseConv1D") and isinstance(layer, L.DepthwiseConv1D)
    ):
        # Keras 3 names the depthwise weight `kernel` on these layers.
        return [_variable(layer, "kernel")]
    if isinstance(layer, _KERNEL_LAYERS):
        return [_variable(layer, "kernel")]
    if isinstance(layer, L.Embedding):
        return [_variable(layer, "embeddings")]
    if isinstance(layer, _RNN_LAYERS):
        return [
            _variable(layer.cell, "kernel"),
            _variable(layer.cell, "recurrent_kernel"),
        ]
    if isinstance(layer, L.MultiHeadAttention):
        # Query, key, value and output projections are EinsumDense layers.
        return [
            _variable(sub, "kernel")
            for sub in keras_private.flatten_layers(layer, include_self=False)
            if isinstance(sub, L.EinsumDense)
        ]
    return None


def input_channel_axis(layer, weight):
    """The axis of `weight` that N:M sparsity groups along (negative).

    The pattern must run along the axis the layer sums over (its input
    channels), where sparse tensor cores and XNNPack skip the zeros. For a
    Dense kernel `(in, out)` and a convolution's `(..., in, out)` that is
    axis -2. An EinsumDense kernel (MultiHeadAttention's projections among
    them) has its own layout, read from the equation: the query kernel
    `(in, heads, head_dim)` of `"abc,cde->abde"` sums over axis 0, the
    output kernel `(heads, head_dim, out)` of `"abcd,cde->abe"` over axes 0
    and 1, of which the innermost, 1, is used.

    Args:
        layer: A prunable layer.
        weight: One of `get_prunable_weights(layer)`.

    Returns:
        A negative axis index.
    """
    for sub in keras_private.flatten_layers(layer, include_self=True):
        if isinstance(sub, L.EinsumDense) and sub.kernel is weight:
            inputs, output = sub.equation.replace(".", "").split("->")
            source, kernel = inputs.split(",")
            summed = [c for c in kernel if c in source and c not in output]
            if summed:
                return kernel.index(summed[-1]) - len(kernel)
    return -2


def is_prunable(layer):
    """True if `layer`'s type has weights that pruning can mask.

    Unlike `get_prunable_weights`, this works on unbuilt layers.
    """
    if hasattr(layer, "get_prunable_weights"):
        return True
    if isinstance(layer, _NOT_PRUNABLE):
        return False
    return isinstance(
        layer,
        _KERNEL_LAYERS
        + _RNN_LAYERS
        + (
            L.SeparableConv1D,
            L.SeparableConv2D,
            L.DepthwiseConv2D,
            L.Embedding,
            L.MultiHeadAttention,
        ),
    ) or (
        hasattr(L, "DepthwiseConv1D") and isinstance(layer, L.DepthwiseConv1D)
    )
