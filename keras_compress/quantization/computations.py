"""How a `QuantizeWrapper` computes each kind of layer.

A `QuantizeConfig` says *which* tensors of a layer are fake-quantized; a
`QuantizedComputation` says *how the layer is computed* so that the graph
the converter sees has one integer op per quantized tensor. Most layers
run their own `call` with the fake-quantized weights in place of their
variables (`QuantizedComputation`, the default). Some need a different
shape of graph than their own `call` gives, and have a computation of
their own, registered for their class:

- `SeparableConv2D`: a quantizer between its depthwise and pointwise
  parts, which LiteRT runs as two ops;
- `Conv1D`: the kernel is quantized after it is expanded to the 2D kernel
  LiteRT uses (quantized before, the converter rejects its per-channel
  axis);
- `Dense` on inputs of rank > 2: one 2D matrix product, so that the
  converter fuses the bias into the int8 FULLY_CONNECTED instead of
  leaving a float ADD;
- `MultiHeadAttention`: a quantizer after each projection, the attention
  scores, the softmax and the weighted sum, so that LiteRT runs each as an
  int8 FULLY_CONNECTED, BATCH_MATMUL or SOFTMAX; the query scale
  1/sqrt(key_dim) is folded into the query projection, saving a MUL;
- `LayerNormalization`: computed step by step with a quantizer after each
  step, so that each of its MEAN, SUB, MUL, RSQRT and ADD ops runs on int8;
- a `BatchNormalization` that could not be folded, `Normalization` and
  `Rescaling`: a quantizer after their MUL, constants quantized to 8 bits;
- `Embedding`: the lookup keeps the table's grid (LiteRT's int8 GATHER
  keeps the table's scale); a `ReversibleEmbedding`'s reversed call (a
  tied language-model head) quantizes its logits with their own range.

Computations also say what the rest of the quantization machinery needs
to know about a kind of layer: whether the wrapper takes over its
activation, which kernel its bias is added to in int32 (so that QAT rounds
the bias to LiteRT's int32 grid), and whether LiteRT runs it with one
scale for its inputs and output (CONCATENATION, AVERAGE_POOL_2D).

The most specific class registered in a layer's MRO gives its computation,
so a subclass of a built-in layer gets the built-in's. A custom layer whose
own `call` does not convert to integer ops can register its own with
`register_quantized_computation`.

Example:

```python
@kc.quantization.register_quantized_computation(MyGatedDense)
class GatedDenseComputation(kc.quantization.QuantizedComputation):
    required_intermediates = ("gate",)

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer
        gate = forward.quantize("gate", ops.sigmoid(
            ops.matmul(inputs, forward.weight(layer.gate_kernel))))
        return ops.matmul(inputs, forward.weight(layer.kernel)) * gate
```
"""

import math

import keras
from keras import layers as L
from keras import ops

from keras_compress import rewrite
from keras_compress.core import keras_private
from keras_compress.quantization import batch_norm_folding as folding
from keras_compress.quantization import quantizers as quantizers_lib

_REGISTRY = {}


def register_quantized_computation(layer_class):
    """Registers a `QuantizedComputation` subclass for `layer_class`.

    Used as a class decorator; the class is instantiated once (a
    computation holds no state of its own). Registering a class again
    replaces its computation.

    Args:
        layer_class: A `keras.layers.Layer` subclass. Its subclasses get the
            same computation unless one is registered for them.

    Returns:
        A decorator that registers the computation class and returns it.

    Example:

    ```python
    @register_quantized_computation(MyLayer)
    class MyComputation(QuantizedComputation):
        def call(self, forward, inputs, args, kwargs):
            ...
    ```
    """
    if not (
        isinstance(layer_class, type)
        and issubclass(layer_class, keras.layers.Layer)
    ):
        raise ValueError(
            "register_quantized_computation() takes a keras.layers.Layer "
            f"subclass; received {layer_class!r}."
        )

    def register(computation_class):
        if not (
            isinstance(computation_class, type)
            and issubclass(computation_class, QuantizedComputation)
        ):
            raise ValueError(
                f"The computation registered for {layer_class.__name__} "
                "must be a subclass of keras_compress.quantization."
                f"QuantizedComputation; received {computation_class!r}."
            )
        _REGISTRY[layer_class] = computation_class()
        return computation_class

    return register


def computation_for(layer):
    """The `QuantizedComputation` of `layer` (the default one if none is
    registered for its class or a base class)."""
    for cls in type(layer).__mro__:
        computation = _REGISTRY.get(cls)
        if computation is not None:
            return computation
    return _DEFAULT


def takes_activation(layer):
    """Whether a `QuantizeWrapper` applies `layer`'s activation itself (with
    a quantizer in front where LiteRT cannot fuse it into the op)."""
    return computation_for(layer).takes_activation


class ForwardPass:
    """What a computation reads in one call of a `QuantizeWrapper`.

    Created by the wrapper for each call; computations use it instead of
    the wrapper's internals.

    Attributes:
        layer: The wrapped layer.
        training: Whether the call is a training step (updates the
            moving ranges).
    """

    def __init__(self, wrapper, values, weight_steps, training):
        self._wrapper = wrapper
        self._values = values
        self._weight_steps = weight_steps
        self.layer = wrapper.layer
        self.training = training

    def weight(self, variable):
        """The value the layer computes with in place of `variable`: its
        fake-quantized (or folded) value, else the variable's own."""
        value = self._values.get(id(variable))
        return variable.value if value is None else value

    def float_weight(self, variable):
        """`variable`'s float32 value before quantization (after any
        constraint, e.g. a pruning mask)."""
        return self._wrapper._prepare(variable, None, None)

    def weight_step(self, kernel):
        """The grid step of the fake-quantized `kernel`, or `None`."""
        return self._weight_steps.get(id(kernel))

    def input_step(self, name):
        """The grid step of input `name` (see `bias_inputs`), or `None`."""
        return self._wrapper._input_step(name)

    def weight_quantizer(self, variable):
        """The quantizer of `variable`, or `None` if it is not quantized."""
        for quantized, quantizer, _ in self._wrapper._weight_specs:
            if quantized is variable:
                return quantizer
        return None

    def has_quantizer(self, name):
        """Whether the config gives a quantizer for intermediate `name`."""
        return name in self._wrapper._intermediate_specs

    def quantize(self, name, tensor, update=True):
        """`tensor` fake-quantized by intermediate quantizer `name`.

        Args:
            name: The intermediate's name in the layer's config.
            tensor: The tensor to quantize.
            update: Whether a training step updates the quantizer's range
                with `tensor` (False for a constant on its grid).

        Returns:
            The fake-quantized tensor.
        """
        quantizer, state = self._wrapper._intermediate_specs[name]
        return quantizer(tensor, self.training and update, state)

    def quantizer_step(self, name):
        """The grid step of intermediate quantizer `name`."""
        quantizer, state = self._wrapper._intermediate_specs[name]
        return quantizer.step(state)

    def quantize_internal(self, name, tensor):
        """`tensor` fake-quantized by the computation's own quantizer
        `name` (see `QuantizedComputation.internal_quantizers`)."""
        quantizer, state = self._wrapper._computation_specs[name]
        return quantizer(tensor, self.training, state)

    def call_layer(self, inputs, args=(), kwargs=None):
        """The layer's own `call`, with the fake-quantized weights."""
        return self._wrapper.call_layer(
            inputs,
            args,
            kwargs or {},
            training=self.training,
            values=self._values,
        )


class QuantizedComputation:
    """How a `QuantizeWrapper` computes one kind of layer (the default:
    the layer's own `call`, with fake-quantized weights).

    Subclass it and register it with `register_quantized_computation` for
    a layer whose own `call` does not give the converter one integer op
    per quantized tensor.

    Attributes:
        required_intermediates: Names of intermediate tensors LiteRT needs
            a range for; the layer's `QuantizeConfig` must give a quantizer
            for each (`get_intermediate_quantizers`).
        takes_activation: Whether the wrapper applies the layer's own
            activation (the layer is set to linear), so that it can put a
            quantizer in front of one that LiteRT does not fuse.
        same_scale: Whether LiteRT runs the layer with one scale for its
            inputs and output, so that the wrapper quantizes its output with
            its input's range.
        rounds_to_input_grid: Whether LiteRT rounds the layer's output to
            its input's grid by itself (an integer average pooling).
    """

    required_intermediates = ()
    takes_activation = False
    same_scale = False
    rounds_to_input_grid = False

    def internal_quantizers(self, scheme):
        """`{name: Quantizer}` for tensors the computation itself
        quantizes, whatever the config (built by the wrapper)."""
        return {}

    def output_shape(self, layer, input_shape):
        """The layer's output shape, for layers without
        `compute_output_shape` too."""
        try:
            return layer.compute_output_shape(input_shape)
        except NotImplementedError:
            outputs = layer.compute_output_spec(
                rewrite.symbolic_inputs(input_shape)
            )
            return keras.tree.map_structure(lambda t: t.shape, outputs)

    def bias_inputs(self, args, kwargs):
        """`{name: input tensor}` of the inputs a bias is added on, whose
        grid step `ForwardPass.input_step(name)` gives."""
        if not args or isinstance(args[0], (list, tuple, dict)):
            return {}
        return {"inputs": args[0]}

    def bias_kernel(self, layer, input_rank):
        """The kernel whose integer product LiteRT adds the layer's bias to
        in int32 (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D), or `None`:
        QAT then rounds the bias to that int32 grid."""
        return None

    def prepare_weight(self, layer, variable, weight):
        """`variable`'s float32 value as the computation quantizes it."""
        return weight

    def float_values(self, layer):
        """`{id(variable): value}` for unquantized variables the
        computation uses a different value of."""
        return {}

    def call(self, forward, inputs, args, kwargs):
        """The layer's output, computed with `forward` (a `ForwardPass`).

        Args:
            forward: The `ForwardPass` of this call.
            inputs: The first argument of the call.
            args: The other positional arguments.
            kwargs: The keyword arguments, without `training`.

        Returns:
            The layer's output (before the wrapper's activation and output
            quantizer).
        """
        return forward.call_layer(inputs, args, kwargs)


_DEFAULT = QuantizedComputation()


class _KernelComputation(QuantizedComputation):
    """A Dense-like or convolution layer: its own call, its activation
    taken over, its bias on the int32 grid of its product."""

    takes_activation = True

    def bias_kernel(self, layer, input_rank):
        return layer.kernel


register_quantized_computation(L.Conv2D)(_KernelComputation)
register_quantized_computation(L.DepthwiseConv2D)(_KernelComputation)


@register_quantized_computation(L.DepthwiseConv1D)
class _DepthwiseConv1DComputation(QuantizedComputation):
    def bias_kernel(self, layer, input_rank):
        return layer.kernel


@register_quantized_computation(L.Conv2DTranspose)
class _TransposedConvComputation(QuantizedComputation):
    # TRANSPOSE_CONV's bias is a separate input the converter quantizes
    # by itself.
    takes_activation = True


@register_quantized_computation(L.Dense)
class _DenseComputation(_KernelComputation):
    """Dense on inputs of rank > 2 as one 2D matrix product.

    Keras's batched matmul converts to FULLY_CONNECTED followed by a
    separate float ADD of the bias; on a 2D view of the inputs the bias is
    fused into the int8 FULLY_CONNECTED.
    """

    def bias_kernel(self, layer, input_rank):
        if getattr(layer, "lora_enabled", False):
            return None
        return layer.kernel

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer
        if len(inputs.shape) <= 2 or getattr(layer, "lora_enabled", False):
            return forward.call_layer(inputs, args, kwargs)
        outputs = project(
            inputs,
            "...i,io->...o",
            forward.weight(layer.kernel),
            forward.weight(layer.bias) if layer.use_bias else None,
        )
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs


@register_quantized_computation(L.EinsumDense)
class _EinsumDenseComputation(QuantizedComputation):
    takes_activation = True

    def bias_kernel(self, layer, input_rank):
        if matmul_form(layer.equation, input_rank) is None:
            return None
        return layer.kernel


def _add_bias(layer, outputs, forward):
    if not layer.use_bias:
        return outputs
    bias = ops.cast(forward.weight(layer.bias), outputs.dtype)
    if layer.data_format == "channels_first":
        bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
    return outputs + bias


@register_quantized_computation(L.Conv1D)
class _Conv1DComputation(_KernelComputation):
    """Conv1D as LiteRT runs it: a CONV_2D with a (1, width) kernel."""

    def prepare_weight(self, layer, variable, weight):
        if variable is layer.kernel:
            # Quantize the (1, w, in, out) kernel that LiteRT uses.
            return ops.expand_dims(weight, 0)
        return weight

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer
        kernel = forward.weight(layer.kernel)
        if len(kernel.shape) == 3:  # not quantized: expand here
            kernel = ops.expand_dims(kernel, 0)
        kernel = ops.cast(kernel, inputs.dtype)
        padding = layer.padding
        if padding == "causal":
            inputs = ops.pad(inputs, keras_private.causal_padding(layer))
            padding = "valid"
        spatial_axis = 1 if layer.data_format == "channels_last" else 2
        outputs = ops.conv(
            ops.expand_dims(inputs, spatial_axis),
            kernel,
            strides=(1, layer.strides[0]),
            padding=padding,
            dilation_rate=(1, layer.dilation_rate[0]),
            data_format=layer.data_format,
        )
        outputs = ops.squeeze(outputs, spatial_axis)
        return _add_bias(layer, outputs, forward)


@register_quantized_computation(L.SeparableConv2D)
class _SeparableConv2DComputation(QuantizedComputation):
    """SeparableConv2D as LiteRT's two int8 ops, DEPTHWISE_CONV_2D and
    CONV_2D: the tensor between them needs a range."""

    takes_activation = True

    def internal_quantizers(self, scheme):
        return {"depthwise_output": scheme.activation_quantizer()}

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer
        depthwise = ops.cast(
            forward.weight(layer.depthwise_kernel), inputs.dtype
        )
        pointwise = ops.cast(
            forward.weight(layer.pointwise_kernel), inputs.dtype
        )
        outputs = ops.depthwise_conv(
            inputs,
            depthwise,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
        outputs = forward.quantize_internal("depthwise_output", outputs)
        outputs = ops.conv(
            outputs,
            pointwise,
            strides=1,
            padding="valid",
            data_format=layer.data_format,
        )
        return _add_bias(layer, outputs, forward)


@register_quantized_computation(L.LayerNormalization)
class _LayerNormalizationComputation(QuantizedComputation):
    """LayerNormalization with a quantizer after each int8 op.

    LiteRT runs `ops.layer_normalization` as MEAN, SQUARED_DIFFERENCE,
    RSQRT, MUL and ADD ops, each on int8 only if its output has a range.
    Computed step by step, with a quantizer after each step the config
    names.
    """

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer

        def quantize(name, tensor):
            if not forward.has_quantizer(name):
                return tensor
            return forward.quantize(name, tensor)

        x = ops.cast(inputs, "float32")
        axis = layer.axis
        mean = quantize("mean", ops.mean(x, axis=axis, keepdims=True))
        x = quantize("centered", x - mean)
        squared = quantize("squared", x * x)
        variance = quantize(
            "variance", ops.mean(squared, axis=axis, keepdims=True)
        )
        variance = quantize("variance_eps", variance + layer.epsilon)
        inv_std = quantize("inv_std", ops.rsqrt(variance))
        outputs = x * inv_std
        shape = [1] * len(x.shape)
        for a in axis if isinstance(axis, (list, tuple)) else [axis]:
            shape[a] = x.shape[a]
        if layer.scale:
            outputs = quantize("normalized", outputs)
            gamma = ops.cast(forward.weight(layer.gamma), "float32")
            outputs = outputs * ops.reshape(gamma, shape)
        if layer.center:
            outputs = quantize(
                "scaled" if layer.scale else "normalized", outputs
            )
            beta = ops.cast(forward.weight(layer.beta), "float32")
            outputs = outputs + ops.reshape(beta, shape)
        return ops.cast(outputs, inputs.dtype)


class _AffineComputation(QuantizedComputation):
    """A per-channel affine map in inference, `x * multiplier + offset`,
    as LiteRT's int8 MUL and ADD."""

    required_intermediates = ("multiplier", "offset", "scaled")

    def factors(self, layer, rank):
        """`(multiplier, offset)` in float32, broadcastable to the layer's
        rank-`rank` inputs."""
        raise NotImplementedError

    def call(self, forward, inputs, args, kwargs):
        multiplier, offset = self.factors(forward.layer, len(inputs.shape))
        x = ops.cast(inputs, "float32")
        x = forward.quantize(
            "scaled", x * forward.quantize("multiplier", multiplier)
        )
        outputs = x + forward.quantize("offset", offset)
        return ops.cast(outputs, inputs.dtype)


@register_quantized_computation(L.BatchNormalization)
class _BatchNormalizationComputation(_AffineComputation):
    """An unfolded BatchNormalization, with its moving statistics in
    training too: as for a folded one, QAT trains gamma and beta and
    leaves the statistics as they are, so that the ranges learned match
    the converted file."""

    def factors(self, layer, rank):
        multiplier, offset = folding.fold_factors(layer)
        shape = [1] * rank
        shape[layer.axis] = -1
        return ops.reshape(multiplier, shape), ops.reshape(offset, shape)


@register_quantized_computation(L.Rescaling)
class _RescalingComputation(_AffineComputation):
    def factors(self, layer, rank):
        # Channels last (see schemes.py).
        return (
            ops.cast(layer.scale, "float32"),
            ops.cast(layer.offset, "float32"),
        )


@register_quantized_computation(L.Normalization)
class _NormalizationComputation(_AffineComputation):
    def factors(self, layer, rank):
        # `(x - mean) / max(sqrt(variance), eps)` (or its inverse), with
        # mean and variance in the broadcast shape.
        mean = ops.cast(layer.mean, "float32")
        std = ops.maximum(
            ops.sqrt(ops.cast(layer.variance, "float32")),
            keras.config.epsilon(),
        )
        if layer.invert:
            return std, mean
        return 1.0 / std, -mean / std


#: Layers whose quantized computation ends in an ADD (which fuses a
#: following ReLU in LiteRT).
AFFINE_LAYERS = (L.BatchNormalization, L.Normalization, L.Rescaling)


@register_quantized_computation(L.Concatenate)
class _ConcatenateComputation(QuantizedComputation):
    same_scale = True


@register_quantized_computation(L.AveragePooling1D)
@register_quantized_computation(L.AveragePooling2D)
class _AveragePoolingComputation(QuantizedComputation):
    same_scale = True
    rounds_to_input_grid = True


@register_quantized_computation(L.Embedding)
class _EmbeddingComputation(QuantizedComputation):
    """The lookup keeps its table's grid: LiteRT's int8 GATHER keeps the
    table's scale."""

    def call(self, forward, inputs, args, kwargs):
        layer = forward.layer
        outputs = forward.call_layer(inputs, args, kwargs)
        quantizer = forward.weight_quantizer(layer.embeddings)
        last_value = isinstance(quantizer, quantizers_lib.LastValueQuantizer)
        if last_value and not quantizer.per_axis:
            return quantizer.quantize_like(
                outputs, forward.float_weight(layer.embeddings)
            )
        return outputs


@register_quantized_computation(L.ReversibleEmbedding)
class _ReversibleEmbeddingComputation(_EmbeddingComputation):
    """The reversed call (a language model's tied head, an int8
    FULLY_CONNECTED) quantizes its logits with their own range."""

    required_intermediates = ("logits",)

    def call(self, forward, inputs, args, kwargs):
        if kwargs.get("reverse", args[0] if args else False):
            outputs = forward.call_layer(inputs, args, kwargs)
            return forward.quantize("logits", outputs)
        return super().call(forward, inputs, args, kwargs)


# The tensors inside a MultiHeadAttention that need a range.
ATTENTION_TENSORS = ("query", "key", "value", "scores", "probs", "attention")


@register_quantized_computation(L.MultiHeadAttention)
class _AttentionComputation(QuantizedComputation):
    """MultiHeadAttention with a quantizer after each int8 op.

    Computes what `MultiHeadAttention.call` computes (without its fused
    `dot_product_attention` path, which the converter cannot quantize),
    with the query scale folded into the query projection. KerasHub's
    `CachedMultiHeadAttention` (a subclass) is supported in its forward
    pass, without a key/value cache (`cache=None`).
    """

    required_intermediates = ATTENTION_TENSORS

    def output_shape(self, layer, input_shape):
        # Shaped like the query (the first input).
        return layer.compute_output_shape(input_shape, input_shape)

    def bias_inputs(self, args, kwargs):
        query = args[0]
        value = args[1] if len(args) > 1 else kwargs.get("value")
        key = args[2] if len(args) > 2 else kwargs.get("key")
        return {
            "query": query,
            "value": value,
            "key": value if key is None else key,
        }

    def prepare_weight(self, layer, variable, weight):
        if variable is layer.query_dense.kernel:
            scale = keras_private.attention_internals(layer)
            return weight * scale.inverse_sqrt_key_dim
        return weight

    def float_values(self, layer):
        bias = layer.query_dense.bias
        if bias is None:
            return {}
        value = ops.cast(ops.convert_to_tensor(bias), "float32")
        scale = keras_private.attention_internals(layer)
        return {id(bias): value * scale.inverse_sqrt_key_dim}

    def call(self, forward, inputs, args, kwargs):
        return self._attention(forward, inputs, *args, **kwargs)

    def _attention(
        self,
        forward,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        use_causal_mask=False,
        cache=None,
        cache_update_index=None,
    ):
        layer = forward.layer
        internals = keras_private.attention_internals(layer)
        if cache is not None or cache_update_index is not None:
            raise ValueError(
                f"Attention layer '{layer.name}' ({type(layer).__name__}) "
                "was called with a key/value cache (token-by-token "
                "generation); quantization-aware training supports the "
                "forward pass over whole sequences only. Train and convert "
                "the model called without a cache."
            )
        if return_attention_scores:
            raise ValueError(
                f"MultiHeadAttention '{layer.name}': quantization-aware "
                "training does not support return_attention_scores=True. "
                "Leave the layer float (quantize_model(..., "
                "layers_to_quantize=...)) to get the scores."
            )
        if key is None:
            key = value
        # The Keras masks of the inputs, as MultiHeadAttention.call reads
        # them.
        query_mask = getattr(query, "_keras_mask", query_mask)
        attention_mask = internals.compute_attention_mask(
            query,
            value,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
        )

        def projection(dense, tensor, input_step):
            bias = None
            if dense.bias is not None:
                bias = forward.weight(dense.bias)
                step = forward.weight_step(dense.kernel)
                if input_step is not None and step is not None:
                    bias = quantizers_lib.quantize_bias(bias, input_step, step)
            return project(
                tensor, dense.equation, forward.weight(dense.kernel), bias
            )

        query = forward.quantize(
            "query",
            projection(layer.query_dense, query, forward.input_step("query")),
        )
        key = forward.quantize(
            "key",
            projection(layer.key_dense, key, forward.input_step("key")),
        )
        value = forward.quantize(
            "value",
            projection(layer.value_dense, value, forward.input_step("value")),
        )
        scores = ops.einsum(internals.dot_product_equation, key, query)
        scores = forward.quantize("scores", scores)
        if attention_mask is None:
            probs = internals.softmax(scores)
        else:
            probs = _masked_softmax(forward, scores, attention_mask)
        probs = forward.quantize("probs", probs)
        if internals.dropout > 0.0:
            probs = internals.dropout_layer(probs, training=forward.training)
        outputs = ops.einsum(internals.combine_equation, probs, value)
        outputs = forward.quantize("attention", outputs)
        return projection(
            layer.output_dense, outputs, forward.quantizer_step("attention")
        )


def _masked_softmax(forward, scores, attention_mask):
    """Softmax over the unmasked, int8 scores, as LiteRT computes it.

    Keras's masked softmax puts -1e9 at masked positions; the converter
    stores that constant on the int8 grid of the scores, i.e. the bottom of
    their range. So does this: masked positions get the lowest value of
    the scores' range (their softmax weight is then tiny, not zero, in
    both), and are set to 0 after the softmax.
    """
    internals = keras_private.attention_internals(forward.layer)
    mask = ops.cast(attention_mask, "bool")
    axis = -len(internals.attention_axes) * 2 - 1
    while len(mask.shape) < len(scores.shape):
        mask = ops.expand_dims(mask, axis=axis)
    floor = forward.quantize(
        "scores", ops.convert_to_tensor(-1e9, scores.dtype), update=False
    )
    probs = internals.softmax(ops.where(mask, scores, floor))
    return ops.where(mask, probs, 0.0)


def matmul_form(equation, input_rank):
    """`(contracted, free)` axis counts if `equation` is a matrix product.

    True for an EinsumDense equation whose contracted letters are the last
    ones of the input, in the kernel's leading order, and whose output is
    the other input letters followed by the kernel's free letters.
    """
    spec, output = equation.split("->")
    inputs, kernel = spec.split(",")
    if inputs.startswith("..."):
        inputs = "." * (input_rank - 1) + inputs[3:]
        output = "." * (input_rank - 1) + output[3:]
    contracted = [c for c in kernel if c in inputs and c not in output]
    n = len(contracted)
    if not n or inputs[len(inputs) - n :] != "".join(contracted):
        return None
    if kernel[:n] != "".join(contracted):
        return None
    free = kernel[n:]
    if output != inputs[: len(inputs) - n] + free:
        return None
    return n, len(free)


def project(inputs, equation, kernel, bias):
    """`einsum(equation, inputs, kernel) + bias`, as a 2D matrix product
    when the equation allows it.

    The converter fuses a bias into FULLY_CONNECTED only when the product
    and the bias are 2D; an einsum with several output axes (the
    projections of MultiHeadAttention) otherwise becomes a
    FULLY_CONNECTED, a RESHAPE and a separate float ADD.
    """
    kernel = ops.cast(kernel, inputs.dtype)
    form = matmul_form(equation, len(inputs.shape))
    if form is None:
        outputs = ops.einsum(equation, inputs, kernel)
        if bias is not None:
            outputs = outputs + ops.cast(bias, outputs.dtype)
        return outputs
    contracted, free = form
    kernel_shape = tuple(kernel.shape)
    depth = math.prod(kernel_shape[:contracted])
    free_shape = kernel_shape[contracted:]
    width = math.prod(free_shape)
    outputs = ops.matmul(
        ops.reshape(inputs, (-1, depth)), ops.reshape(kernel, (depth, width))
    )
    if bias is not None:
        bias = ops.broadcast_to(ops.cast(bias, outputs.dtype), free_shape)
        outputs = outputs + ops.reshape(bias, (width,))
    batch_shape = tuple(inputs.shape[: len(inputs.shape) - contracted])
    if all(d is not None for d in batch_shape[1:]):
        shape = (-1,) + batch_shape[1:] + free_shape
    else:
        dynamic = ops.shape(inputs)[: len(batch_shape)]
        shape = tuple(dynamic) + free_shape
    return ops.reshape(outputs, shape)
