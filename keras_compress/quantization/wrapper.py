"""`QuantizeWrapper`: a layer trained with fake-quantized weights and output.

What one wrapper computes, in order (each step only if it applies):

1. the weights its `QuantizeConfig` names, with a folded BatchNormalization
   (`batch_norm_folding.py`), fake-quantized;
2. the wrapped layer's own computation with those weights in place of its
   variables (in a `keras.StatelessScope`: the layer's code runs
   unchanged);
3. the activation: ReLU/ReLU6 directly (LiteRT fuses them into the op
   before), any other one between a quantizer of its input and its output;
4. the output quantizer (moving-average min/max, or a fixed range after
   sigmoid/softmax/tanh).

Some layers have their own computation, because the converter needs a
shape of graph that the layer's own `call` does not give:
`SeparableConv2D` (a quantizer between its depthwise and pointwise parts,
which LiteRT runs as two ops), `Conv1D` (the kernel is quantized after
it is expanded to the 2D kernel LiteRT uses; quantized before, the
converter rejects its per-channel axis) and `MultiHeadAttention` (a
quantizer after each projection, the attention scores, the softmax and
the weighted sum, so that LiteRT runs each of them as an int8
FULLY_CONNECTED, BATCH_MATMUL or SOFTMAX; the query scale 1/sqrt(key_dim)
is folded into the query projection, saving a MUL), `LayerNormalization`
(computed step by step with a quantizer after each step, so that each of
its MEAN, SUB, MUL, RSQRT and ADD ops runs on int8), a
`BatchNormalization` that could not be folded, `Normalization` and
`Rescaling` (a quantizer after their MUL, constants quantized to 8 bits)
and `Dense` on inputs of rank > 2 (a 2D matrix product, so that the
converter fuses the bias into the int8 FULLY_CONNECTED instead of leaving
a float ADD).
"""

import math
import warnings

import keras
from keras import layers as L
from keras import ops

from keras_compress import core
from keras_compress import rewrite
from keras_compress.clustering import constraints as cluster_constraints
from keras_compress.core import keras_private
from keras_compress.core import tracing
from keras_compress.quantization import batch_norm_folding as folding
from keras_compress.quantization import quantize_config as config_lib
from keras_compress.quantization import quantizers as quantizers_lib
from keras_compress.quantization import schemes as schemes_lib

_PACKAGE = "keras_compress"

# Built-in layers whose `activation` the wrapper takes over, so that it can
# put a quantizer between the layer and a non-fusable activation.
_ACTIVATION_OWNERS = (
    L.Dense,
    L.Conv1D,
    L.Conv2D,
    L.DepthwiseConv2D,
    L.SeparableConv2D,
    L.Conv2DTranspose,
    L.EinsumDense,
)


def output_shape_of(layer, input_shape):
    """`layer`'s output shape, also for layers without compute_output_shape."""
    if isinstance(layer, L.MultiHeadAttention):
        # Shaped like the query (the first input).
        return layer.compute_output_shape(input_shape, input_shape)
    try:
        return layer.compute_output_shape(input_shape)
    except NotImplementedError:
        outputs = layer.compute_output_spec(
            rewrite.symbolic_inputs(input_shape)
        )
        return keras.tree.map_structure(lambda t: t.shape, outputs)


def _pass_through_input(tensor, scheme):
    """The tensor a chain of pass-through layers started from."""
    while isinstance(tensor, keras.KerasTensor):
        history = keras_private.producer_history(tensor)
        if history is None:
            return tensor
        layer = history.operation
        if isinstance(layer, (QuantizeWrapper, keras.layers.InputLayer)) or (
            not scheme.is_pass_through(layer)
        ):
            return tensor
        node = keras_private.inbound_node(layer, history.node_index)
        if len(node.input_tensors) != 1:
            return tensor
        tensor = node.input_tensors[0]
    return tensor


_AVERAGE_POOLING = (L.AveragePooling1D, L.AveragePooling2D)
# Layers LiteRT runs with the same scale on their inputs and output.
_SAME_SCALE = (L.Concatenate,) + _AVERAGE_POOLING


class _SharedRange:
    """Another layer's output quantizer and observers, used read-only.

    A plain object, so that Keras does not track (and save) the other
    layer's variables as this layer's.
    """

    def __init__(self, spec):
        self.spec = spec


def _producer_spec(tensor, scheme):
    """`(layer name, (quantizer, variables))` of the quantizer whose grid
    `tensor` is on (looking through pass-through layers), or `None`."""
    tensor = _pass_through_input(tensor, scheme)
    history = keras_private.producer_history(tensor)
    if history is None:
        return None
    layer = history.operation
    spec = None
    if isinstance(layer, QuantizeWrapper) and layer._range_source:
        spec = layer._range_source.spec  # a Concatenate sharing a range
    elif isinstance(layer, QuantizeWrapper) and layer._output_specs:
        spec = layer._output_specs[0]
    elif hasattr(layer, "quantizer") and hasattr(layer, "_state"):
        spec = (layer.quantizer, layer._state)  # a QuantizeLayer
    return None if spec is None else (layer.name, spec)


def _input_grid(tensor, scheme):
    """The `_SharedRange` of the quantizer `tensor` was rounded by, when
    its grid step is known (see `_bias_kernel`), else `None`."""
    if not isinstance(tensor, keras.KerasTensor):
        return None
    found = _producer_spec(tensor, scheme)
    if found is None or not hasattr(found[1][0], "step"):
        return None
    return _SharedRange(found[1])


def _bias_kernel(layer, input_rank):
    """The kernel whose int8 product LiteRT adds `layer`'s bias to in
    int32 (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D), or `None`."""
    if isinstance(layer, L.Dense) and not getattr(layer, "lora_enabled", 0):
        return layer.kernel
    if isinstance(
        layer, (L.Conv1D, L.Conv2D, L.DepthwiseConv1D, L.DepthwiseConv2D)
    ):
        return layer.kernel
    if isinstance(layer, L.EinsumDense) and (
        _matmul_form(layer.equation, input_rank) is not None
    ):
        return layer.kernel
    return None


def _shared_input_range(wrapper, inputs):
    """The output range a same-scale op must use, if an input imposes one.

    LiteRT runs CONCATENATION and AVERAGE_POOL_2D with one scale for their
    inputs and output. `quantize_model` lets a Concatenate's producers
    leave their outputs unquantized so that they take its scale; a
    producer whose output is also used elsewhere keeps its own range, and
    the converter then gives that range to the whole Concatenate. An
    average pooling rounds its mean to its input's grid. The wrapper
    quantizes the output with the same range (the producer's observer),
    so that Keras and the file agree.
    """
    sources = {}
    for tensor in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
        found = _producer_spec(tensor, wrapper.scheme)
        if found is not None and "min" in found[1][1]:
            name, spec = found
            sources[id(spec[1]["min"])] = (name, spec)
    if len(sources) == 1:
        return _SharedRange(next(iter(sources.values()))[1])
    if len(sources) > 1:
        names = sorted(name for name, _ in sources.values())
        warnings.warn(
            f"Concatenate '{wrapper.layer.name}' has inputs from {names}, "
            "each quantized with its own range because each is also used "
            "elsewhere. LiteRT's CONCATENATION needs one range for all its "
            "inputs, so the converter is likely to reject this model "
            "('same scale constraint'). Feed the Concatenate from layers "
            "used only there.",
            stacklevel=4,
        )
    return None


# The tensors inside a MultiHeadAttention that need a range.
_ATTENTION_TENSORS = ("query", "key", "value", "scores", "probs", "attention")
# The tensors inside a layer that the wrapper computes itself and that
# LiteRT needs a range for.
# Per-channel affine maps in inference, which LiteRT runs as MUL and ADD.
_AFFINE = (L.BatchNormalization, L.Normalization, L.Rescaling)
_REQUIRED_INTERMEDIATES = {
    L.MultiHeadAttention: _ATTENTION_TENSORS,
    L.ReversibleEmbedding: ("logits",),
    **{kind: ("multiplier", "offset", "scaled") for kind in _AFFINE},
}


def _affine_factors(layer, rank):
    """`(multiplier, offset)` of an `_AFFINE` layer, broadcastable to its
    rank-`rank` inputs, in float32."""
    if isinstance(layer, L.BatchNormalization):
        multiplier, offset = folding.fold_factors(layer)
        shape = [1] * rank
        shape[layer.axis] = -1
        return ops.reshape(multiplier, shape), ops.reshape(offset, shape)
    if isinstance(layer, L.Rescaling):  # channels last (see schemes.py)
        return (
            ops.cast(layer.scale, "float32"),
            ops.cast(layer.offset, "float32"),
        )
    # keras.layers.Normalization: `(x - mean) / max(sqrt(variance), eps)`
    # (or its inverse), with mean and variance in the broadcast shape.
    mean = ops.cast(layer.mean, "float32")
    std = ops.maximum(
        ops.sqrt(ops.cast(layer.variance, "float32")), keras.config.epsilon()
    )
    if layer.invert:
        return std, mean
    return 1.0 / std, -mean / std


def _matmul_form(equation, input_rank):
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


def _project(inputs, equation, kernel, bias):
    """`einsum(equation, inputs, kernel) + bias`, as a 2D matrix product
    when the equation allows it.

    The converter fuses a bias into FULLY_CONNECTED only when the product
    and the bias are 2D; an einsum with several output axes (the
    projections of MultiHeadAttention) otherwise becomes a
    FULLY_CONNECTED, a RESHAPE and a separate float ADD.
    """
    kernel = ops.cast(kernel, inputs.dtype)
    form = _matmul_form(equation, len(inputs.shape))
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


def _is_conv1d(layer):
    return isinstance(layer, L.Conv1D)


def _is_linear(activation):
    return activation is None or activation is keras.activations.linear


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeWrapper(core.CompressionWrapper):
    """Trains a layer with fake-quantized weights, activation and output.

    Usually created by `quantize_model`; use it directly to quantize a
    layer inside a model you write yourself (and quantize the model input
    with a `QuantizeLayer`).

    Args:
        layer: The layer to quantize. A Dense, EinsumDense or convolution
            layer's own activation is moved to the wrapper (the layer is
            set to a linear activation). A MultiHeadAttention is called
            with its own arguments (`wrapper(query, value, ...)`).
        quantize_config: A `QuantizeConfig`. Defaults to the one of
            `scheme`, or to `layer.get_quantize_config()` if the layer
            defines it.
        batch_norm: A `BatchNormalization` layer that follows `layer` and
            is folded into its weights (`layer` must have a linear
            activation).
        activation: An activation applied after `layer` (and the folded
            BatchNorm), e.g. `"relu"` from a following ReLU layer. Only if
            the layer has no activation of its own.
        quantize_output: Whether to fake-quantize the output. False for a
            layer whose output LiteRT quantizes with the scale of the next
            op (the inputs of a Concatenate).
        preserve_sparsity: Keep the zeros of the quantized weights at zero
            while training (for models pruned before QAT).
        preserve_clusters: Keep the clusters of the quantized weights
            while training (for models clustered before QAT): each weight
            stays at the mean of its cluster, fixed by
            `set_clusters_from_weights()` (see
            `keras_compress.clustering.ClusterConstraint`).
        scheme: The `QuantizeScheme` (or its name) that provides the
            default config and activation quantizers.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    x = kc.quantization.QuantizeLayer()(inputs)
    x = kc.quantization.QuantizeWrapper(
        keras.layers.Conv2D(8, 3, use_bias=False),
        batch_norm=keras.layers.BatchNormalization(),
        activation="relu")(x)
    ```
    """

    def __init__(
        self,
        layer,
        quantize_config=None,
        batch_norm=None,
        activation=None,
        quantize_output=True,
        preserve_sparsity=False,
        scheme="default_8bit",
        preserve_clusters=False,
        **kwargs,
    ):
        if not core.wrapper.is_wrappable(layer):
            # The base class says why.
            super().__init__(layer, **kwargs)
        self.scheme = schemes_lib.get_scheme(
            keras.saving.deserialize_keras_object(scheme)
            if isinstance(scheme, dict)
            else scheme
        )
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(
                quantize_config
            )
        if quantize_config is None and hasattr(layer, "get_quantize_config"):
            quantize_config = layer.get_quantize_config()
        if quantize_config is None:
            quantize_config = self.scheme.get_quantize_config(layer)
        if quantize_config is None:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot be "
                f"quantized by scheme '{self.scheme.name}'. Give it a "
                "`quantize_config` (see keras_compress.quantization."
                "QuantizeConfig) or a get_quantize_config() method."
            )
        config_lib.check_quantize_config(quantize_config, f"'{layer.name}'")
        if isinstance(batch_norm, dict):
            batch_norm = keras.saving.deserialize_keras_object(batch_norm)
        if batch_norm is not None:
            reason = folding.why_not_foldable(layer, batch_norm)
            if reason:
                raise ValueError(
                    f"Cannot fold '{batch_norm.name}' into '{layer.name}' "
                    f"({type(layer).__name__}): {reason}."
                )
        own_activation = getattr(layer, "activation", None)
        if activation is not None:
            activation = keras.activations.get(activation)
            if isinstance(layer, _ACTIVATION_OWNERS) and not _is_linear(
                own_activation
            ):
                raise ValueError(
                    f"Layer '{layer.name}' already has activation "
                    f"'{schemes_lib.activation_name(own_activation)}'; "
                    f"cannot add activation={activation!r} after it."
                )
        elif isinstance(layer, _ACTIVATION_OWNERS) and not _is_linear(
            own_activation
        ):
            # The wrapper applies it, with a quantizer in front if needed.
            activation = own_activation
            layer.activation = keras.activations.linear
        kwargs.setdefault("name", f"quant_{layer.name}")
        # The global policy, not the layer's: the wrapper computes the
        # quantized path in float32 itself.
        kwargs.setdefault("dtype", None)
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        self.batch_norm = batch_norm
        self.activation = None if _is_linear(activation) else activation
        self.quantize_output = bool(quantize_output)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.preserve_clusters = bool(preserve_clusters)
        object.__setattr__(self, "_weight_specs", [])
        self._output_specs = []
        self._pre_activation_spec = None
        self._intermediate_spec = None
        self._intermediate_specs = {}
        self._masks = []
        self._cluster_ids = []
        self._range_source = None
        # Grids of the inputs a bias is added on (see `quantize_bias`):
        # "inputs", or "query", "key" and "value" of an attention layer.
        self._input_grids = {}

    technique = "quantization"

    def __call__(self, *args, **kwargs):
        if args and isinstance(
            keras.tree.flatten(args[0])[0], keras.KerasTensor
        ):
            # Decided on the graph (when the model is built or loaded).
            self._input_grids = self._find_input_grids(args, kwargs)
        if (
            self.quantize_output
            and isinstance(self.layer, _SAME_SCALE)
            and args
            and any(
                isinstance(t, keras.KerasTensor)
                for t in keras.tree.flatten(args[0])
            )
        ):
            # Decided on the graph (when the model is built or loaded).
            self._range_source = _shared_input_range(self, args[0])
        return super().__call__(*args, **kwargs)

    def _find_input_grids(self, args, kwargs):
        if isinstance(self.layer, L.MultiHeadAttention):
            query = args[0]
            value = args[1] if len(args) > 1 else kwargs.get("value")
            key = args[2] if len(args) > 2 else kwargs.get("key")
            tensors = {
                "query": query,
                "value": value,
                "key": value if key is None else key,
            }
        elif isinstance(args[0], (list, tuple, dict)):
            return {}
        else:
            tensors = {"inputs": args[0]}
        grids = {
            name: _input_grid(tensor, self.scheme)
            for name, tensor in tensors.items()
        }
        return {name: grid for name, grid in grids.items() if grid}

    def _input_step(self, name):
        grid = self._input_grids.get(name)
        if grid is None:
            return None
        quantizer, variables = grid.spec
        return quantizer.step(variables)

    # Building.

    def build(self, input_shape=None):
        super().build(input_shape)
        output_shape = output_shape_of(self.layer, input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(output_shape)
        layer = self.layer
        weight_specs = []
        for (
            variable,
            quantizer,
        ) in self.quantize_config.get_weights_and_quantizers(layer):
            if not any(variable is v for v in layer.variables):
                raise ValueError(
                    f"The quantize config of '{layer.name}' returned "
                    f"variable '{variable.path}', which is not a variable "
                    "of the layer."
                )
            name = variable.name
            state = quantizer.build(variable.shape, name, self)
            weight_specs.append((variable, quantizer, state))
        # Not tracked by Keras: these variables belong to the wrapped layer
        # (tracked, they would be saved twice).
        object.__setattr__(self, "_weight_specs", weight_specs)

        self._output_specs = []
        if self.quantize_output:
            quantizers = list(self.quantize_config.get_output_quantizers(layer))
            activation = schemes_lib.activation_name(self.activation)
            if quantizers and activation in schemes_lib.FIXED_OUTPUT_RANGES:
                quantizers = [self.scheme.output_quantizer_for(activation)]
            for index, quantizer in enumerate(quantizers):
                name = "output" if index == 0 else f"output_{index}"
                state = quantizer.build(output_shape, name, self)
                self._output_specs.append((quantizer, state))

        self._pre_activation_spec = None
        if self.activation is not None and (
            schemes_lib.activation_name(self.activation)
            not in schemes_lib.FUSABLE_ACTIVATIONS
        ):
            quantizer = self.scheme.activation_quantizer()
            state = quantizer.build(output_shape, "pre_activation", self)
            self._pre_activation_spec = (quantizer, state)

        self._intermediate_spec = None
        if isinstance(layer, L.SeparableConv2D):
            quantizer = self.scheme.activation_quantizer()
            state = quantizer.build(None, "depthwise_output", self)
            self._intermediate_spec = (quantizer, state)

        self._intermediate_specs = {}
        getter = getattr(
            self.quantize_config, "get_intermediate_quantizers", None
        )
        for name, quantizer in (getter(layer) if getter else {}).items():
            state = quantizer.build(None, name, self)
            self._intermediate_specs[name] = (quantizer, state)
        for kind, tensors in _REQUIRED_INTERMEDIATES.items():
            if not isinstance(layer, kind):
                continue
            missing = sorted(set(tensors) - set(self._intermediate_specs))
            if missing:
                raise ValueError(
                    f"The quantize config of {kind.__name__} "
                    f"'{layer.name}' has no intermediate quantizers for "
                    f"{missing}: LiteRT needs a range for each of "
                    f"{list(tensors)}."
                )

        self._masks = []
        if self.preserve_sparsity:
            for variable, _, _ in self._weight_specs:
                mask = self.add_weight(
                    name=f"{variable.name}_mask",
                    shape=variable.shape,
                    dtype=variable.dtype,
                    initializer="ones",
                    trainable=False,
                )
                # The optimizer's step keeps pruned weights at zero.
                core.install_constraint(variable, core.MaskConstraint(mask))
                self._masks.append(mask)

        self._cluster_ids = []
        if self.preserve_clusters:
            for variable, _, _ in self._weight_specs:
                ids = self.add_weight(
                    name=f"{variable.name}_cluster_ids",
                    shape=variable.shape,
                    dtype="int32",
                    initializer="zeros",
                    trainable=False,
                )
                # After the optimizer's step, one value per cluster again.
                core.install_constraint(
                    variable, cluster_constraints.ClusterConstraint(ids)
                )
                self._cluster_ids.append(ids)

    def set_clusters_from_weights(self):
        """Fixes each weight's cluster: one per distinct value, zeros apart."""
        if not self.preserve_clusters:
            raise ValueError(
                f"'{self.name}' was created with preserve_clusters=False: "
                "it has no clusters."
            )
        for (variable, _, _), ids in zip(self._weight_specs, self._cluster_ids):
            ids.assign(
                cluster_constraints.cluster_ids_from_values(variable.numpy())
            )

    def set_masks_from_weights(self):
        """Sets each sparsity mask to `weight != 0` (after pruning)."""
        if not self.preserve_sparsity:
            raise ValueError(
                f"'{self.name}' was created with preserve_sparsity=False: "
                "it has no masks."
            )
        for (variable, _, _), mask in zip(self._weight_specs, self._masks):
            mask.assign(ops.cast(ops.not_equal(variable.value, 0), mask.dtype))

    # The forward pass.

    def call(self, inputs, *args, training=None, **kwargs):
        training = bool(training)
        layer = self.layer
        values = {}
        scale = offset = None
        if self.batch_norm is not None:
            scale, offset = folding.fold_factors(self.batch_norm)
        folded = None
        if scale is not None:
            folded = getattr(layer, folding.folded_weight_name(layer))
        attention_scale = None
        if isinstance(layer, L.MultiHeadAttention):
            attention_scale = layer._inverse_sqrt_key_dim
            bias = layer.query_dense.bias
            if bias is not None:
                values[id(bias)] = (
                    ops.cast(ops.convert_to_tensor(bias), "float32")
                    * attention_scale
                )
        # id(kernel) -> its grid step, for the biases added to its product.
        weight_steps = {}
        for variable, quantizer, state in self._weight_specs:
            weight = self._prepare(variable, folded, scale)
            if attention_scale is not None and (
                variable is layer.query_dense.kernel
            ):
                weight = weight * attention_scale
            values[id(variable)] = quantizer(weight, training, state)
            if hasattr(quantizer, "weight_step"):
                weight_steps[id(variable)] = quantizer.weight_step(weight)
        if folded is not None and id(folded) not in values:
            values[id(folded)] = self._prepare(folded, folded, scale)

        extra_bias = None
        if scale is not None:
            if getattr(layer, "use_bias", False):
                values[id(layer.bias)] = folding.fold_bias(
                    ops.convert_to_tensor(layer.bias), scale, offset
                )
            else:
                extra_bias = offset
        kernel = None
        if hasattr(inputs, "shape"):  # one tensor: not Add, Concatenate...
            kernel = _bias_kernel(layer, len(inputs.shape))
        input_step = self._input_step("inputs")
        if (
            kernel is not None
            and input_step is not None
            and id(kernel) in weight_steps
        ):
            step = weight_steps[id(kernel)]
            if getattr(layer, "bias", None) is not None:
                values[id(layer.bias)] = quantizers_lib.quantize_bias(
                    self._weight(values, layer.bias), input_step, step
                )
            elif extra_bias is not None:
                extra_bias = quantizers_lib.quantize_bias(
                    extra_bias, input_step, step
                )

        if isinstance(layer, L.SeparableConv2D):
            outputs = self._separable_conv(inputs, values, training)
        elif _is_conv1d(layer):
            outputs = self._conv1d(inputs, values)
        elif isinstance(layer, L.Dense) and len(inputs.shape) > 2:
            outputs = self._project_dense(inputs, values)
        elif isinstance(layer, L.LayerNormalization):
            outputs = self._layer_norm(inputs, values, training)
        elif isinstance(layer, _AFFINE):
            outputs = self._affine(inputs, training)
        elif isinstance(layer, L.MultiHeadAttention):
            outputs = self._attention(
                inputs,
                *args,
                values=values,
                weight_steps=weight_steps,
                training=training,
                **kwargs,
            )
        else:
            outputs = self._stateless_call(
                inputs, args, values, training, kwargs
            )
            if isinstance(layer, L.Embedding):
                outputs = self._embedding_output(
                    outputs, args, kwargs, training
                )
        if extra_bias is not None:
            outputs = outputs + ops.cast(extra_bias, outputs.dtype)

        if self.activation is not None:
            if self._pre_activation_spec is not None:
                quantizer, state = self._pre_activation_spec
                outputs = quantizer(outputs, training, state)
            outputs = self.activation(outputs)

        if self._output_specs:
            flat = keras.tree.flatten(outputs)
            specs = self._output_specs
            if self._range_source is not None:
                specs = [self._range_source.spec]
            if len(specs) == 1 and len(flat) > 1:
                specs = specs * len(flat)
            # A shared range belongs to another layer, which updates it.
            update = training and self._range_source is None
            quantizer, state = specs[0]
            if (
                isinstance(self.layer, _AVERAGE_POOLING)
                and self._range_source is not None
                and "min" in state
                and not tracing.in_converter_trace()
            ):
                # On its input's grid, LiteRT's AVERAGE_POOL_2D rounds so by
                # itself: this only makes Keras agree, and must not become
                # ops in the file.
                flat[0] = ops.cast(
                    quantizers_lib.round_ties_as_litert_mean(
                        flat[0], quantizer, state
                    ),
                    flat[0].dtype,
                )
            flat = [
                quantizer(tensor, update, state)
                for tensor, (quantizer, state) in zip(flat, specs)
            ] + flat[len(specs) :]
            outputs = keras.tree.pack_sequence_as(outputs, flat)
        return outputs

    def _embedding_output(self, outputs, args, kwargs, training):
        """An Embedding's lookup keeps its table's grid (LiteRT's int8
        GATHER keeps the table's scale); a ReversibleEmbedding's reversed
        call (a language model's tied head, an int8 FULLY_CONNECTED)
        quantizes its logits with their own range."""
        layer = self.layer
        if isinstance(layer, L.ReversibleEmbedding) and kwargs.get(
            "reverse", args[0] if args else False
        ):
            quantizer, state = self._intermediate_specs["logits"]
            return quantizer(outputs, training, state)
        for variable, quantizer, _ in self._weight_specs:
            if (
                variable is layer.embeddings
                and isinstance(quantizer, quantizers_lib.LastValueQuantizer)
                and not quantizer.per_axis
            ):
                return quantizer.quantize_like(
                    outputs, self._prepare(variable, None, None)
                )
        return outputs

    def _prepare(self, variable, folded, scale):
        """The float32 value of a weight before quantization."""
        projected = core.constraints.forward_value(variable)
        if projected is None:
            projected = ops.convert_to_tensor(variable)
        weight = ops.cast(projected, "float32")
        if variable is folded:
            weight = folding.scale_kernel(self.layer, weight, scale)
        if _is_conv1d(self.layer) and variable is self.layer.kernel:
            # Quantize the (1, w, in, out) kernel that LiteRT uses.
            weight = ops.expand_dims(weight, 0)
        return weight

    def _stateless_call(self, inputs, args, values, training, kwargs):
        """Runs the layer's own code with `values` for some variables."""
        return self.call_layer(
            inputs, args, kwargs, training=training, values=values
        )

    def _weight(self, values, variable):
        value = values.get(id(variable))
        return variable.value if value is None else value

    def _conv1d(self, inputs, values):
        layer = self.layer
        kernel = self._weight(values, layer.kernel)
        if len(kernel.shape) == 3:  # not quantized: expand here
            kernel = ops.expand_dims(kernel, 0)
        kernel = ops.cast(kernel, inputs.dtype)
        padding = layer.padding
        if padding == "causal":
            inputs = ops.pad(inputs, layer._compute_causal_padding())
            padding = "valid"
        channels_last = layer.data_format == "channels_last"
        spatial_axis = 1 if channels_last else 2
        outputs = ops.conv(
            ops.expand_dims(inputs, spatial_axis),
            kernel,
            strides=(1, layer.strides[0]),
            padding=padding,
            dilation_rate=(1, layer.dilation_rate[0]),
            data_format=layer.data_format,
        )
        outputs = ops.squeeze(outputs, spatial_axis)
        return self._add_bias(outputs, values)

    def _separable_conv(self, inputs, values, training):
        layer = self.layer
        depthwise = ops.cast(
            self._weight(values, layer.depthwise_kernel), inputs.dtype
        )
        pointwise = ops.cast(
            self._weight(values, layer.pointwise_kernel), inputs.dtype
        )
        outputs = ops.depthwise_conv(
            inputs,
            depthwise,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
        # LiteRT runs the depthwise and pointwise parts as two int8 ops:
        # the tensor between them needs a range.
        quantizer, state = self._intermediate_spec
        outputs = quantizer(outputs, training, state)
        outputs = ops.conv(
            outputs,
            pointwise,
            strides=1,
            padding="valid",
            data_format=layer.data_format,
        )
        return self._add_bias(outputs, values)

    def _attention(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        use_causal_mask=False,
        *,
        values,
        weight_steps,
        training,
        cache=None,
        cache_update_index=None,
    ):
        """MultiHeadAttention with a quantizer after each int8 op.

        Computes what `MultiHeadAttention.call` computes (without its fused
        `dot_product_attention` path, which the converter cannot quantize),
        with the query scale folded into the query projection. KerasHub's
        `CachedMultiHeadAttention` (a subclass) is supported in its forward
        pass, without a key/value cache (`cache=None`).
        """
        layer = self.layer
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
        attention_mask = layer._compute_attention_mask(
            query,
            value,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
        )
        specs = self._intermediate_specs

        def quantize(name, tensor):
            quantizer, state = specs[name]
            return quantizer(tensor, training, state)

        def project(dense, tensor, input_step):
            bias = None
            if dense.bias is not None:
                bias = self._weight(values, dense.bias)
                step = weight_steps.get(id(dense.kernel))
                if input_step is not None and step is not None:
                    bias = quantizers_lib.quantize_bias(bias, input_step, step)
            return _project(
                tensor, dense.equation, self._weight(values, dense.kernel), bias
            )

        query = quantize(
            "query",
            project(layer.query_dense, query, self._input_step("query")),
        )
        key = quantize(
            "key", project(layer.key_dense, key, self._input_step("key"))
        )
        value = quantize(
            "value",
            project(layer.value_dense, value, self._input_step("value")),
        )
        scores = ops.einsum(layer._dot_product_equation, key, query)
        scores = quantize("scores", scores)
        if attention_mask is None:
            probs = layer._softmax(scores)
        else:
            probs = self._masked_softmax(scores, attention_mask)
        probs = quantize("probs", probs)
        if layer._dropout > 0.0:
            probs = layer._dropout_layer(probs, training=training)
        outputs = ops.einsum(layer._combine_equation, probs, value)
        outputs = quantize("attention", outputs)
        quantizer, state = specs["attention"]
        return project(layer.output_dense, outputs, quantizer.step(state))

    def _project_dense(self, inputs, values):
        """A Dense layer on inputs of rank > 2, as one matrix product.

        Keras's batched matmul converts to FULLY_CONNECTED followed by a
        separate float ADD of the bias; on a 2D view of the inputs the
        bias is fused into the int8 FULLY_CONNECTED.
        """
        layer = self.layer
        if getattr(layer, "lora_enabled", False):
            return self._stateless_call(inputs, (), values, False, {})
        outputs = _project(
            inputs,
            "...i,io->...o",
            self._weight(values, layer.kernel),
            self._weight(values, layer.bias) if layer.use_bias else None,
        )
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def _layer_norm(self, inputs, values, training):
        """LayerNormalization with a quantizer after each int8 op.

        LiteRT runs `ops.layer_normalization` as MEAN, SQUARED_DIFFERENCE,
        RSQRT, MUL and ADD ops, each on int8 only if its output has a
        range. Computed step by step, with a quantizer after each step.
        """
        layer = self.layer
        specs = self._intermediate_specs

        def quantize(name, tensor):
            if name not in specs:
                return tensor
            quantizer, state = specs[name]
            return quantizer(tensor, training, state)

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
            gamma = ops.cast(self._weight(values, layer.gamma), "float32")
            outputs = outputs * ops.reshape(gamma, shape)
        if layer.center:
            outputs = quantize(
                "scaled" if layer.scale else "normalized", outputs
            )
            beta = ops.cast(self._weight(values, layer.beta), "float32")
            outputs = outputs + ops.reshape(beta, shape)
        return ops.cast(outputs, inputs.dtype)

    def _affine(self, inputs, training):
        """A BatchNormalization, Normalization or Rescaling as LiteRT's
        int8 MUL and ADD.

        All are `x * multiplier + offset` per channel in inference. A
        BatchNorm uses its moving statistics, in training too: as for a
        folded one, QAT trains gamma and beta and leaves the statistics as
        they are, so that the ranges learned match the converted file.
        """
        specs = self._intermediate_specs

        def quantize(name, tensor):
            quantizer, state = specs[name]
            return quantizer(tensor, training, state)

        multiplier, offset = _affine_factors(self.layer, len(inputs.shape))
        x = ops.cast(inputs, "float32")
        x = quantize("scaled", x * quantize("multiplier", multiplier))
        outputs = x + quantize("offset", offset)
        return ops.cast(outputs, inputs.dtype)

    def _masked_softmax(self, scores, attention_mask):
        """Softmax over the unmasked, int8 scores, as LiteRT computes it.

        Keras's masked softmax puts -1e9 at masked positions; the converter
        stores that constant on the int8 grid of the scores, i.e. the
        bottom of their range. So does this: masked positions get the
        lowest value of the scores' range (their softmax weight is then
        tiny, not zero, in both), and are set to 0 after the softmax.
        """
        layer = self.layer
        mask = ops.cast(attention_mask, "bool")
        axis = -len(layer._attention_axes) * 2 - 1
        while len(mask.shape) < len(scores.shape):
            mask = ops.expand_dims(mask, axis=axis)
        quantizer, state = self._intermediate_specs["scores"]
        floor = quantizer(
            ops.convert_to_tensor(-1e9, scores.dtype), False, state
        )
        probs = layer._softmax(ops.where(mask, scores, floor))
        return ops.where(mask, probs, 0.0)

    def _add_bias(self, outputs, values):
        layer = self.layer
        if not layer.use_bias:
            return outputs
        bias = ops.cast(self._weight(values, layer.bias), outputs.dtype)
        if layer.data_format == "channels_first":
            bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
        return outputs + bias

    def compute_output_shape(self, input_shape):
        return output_shape_of(self.layer, input_shape)

    # Introspection.

    @property
    def quantized_weights(self):
        """The wrapped layer's variables that are fake-quantized."""
        return [variable for variable, _, _ in self._weight_specs]

    @property
    def sparsity_masks(self):
        """The 0/1 masks of `quantized_weights` (preserve_sparsity only)."""
        return list(self._masks)

    def observer_variables(self):
        """`[(name, min_variable, max_variable)]` of the moving ranges."""
        specs = []
        if self._range_source is None:
            specs = [("output", spec) for spec in self._output_specs]
        if self._pre_activation_spec is not None:
            specs.append(("pre_activation", self._pre_activation_spec))
        if self._intermediate_spec is not None:
            specs.append(("depthwise_output", self._intermediate_spec))
        specs.extend(self._intermediate_specs.items())
        return [
            (f"{self.name}/{name}", state["min"], state["max"])
            for name, (_, state) in specs
            if "min" in state
        ]

    # Serialization.

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "quantize_config": keras.saving.serialize_keras_object(
                    self.quantize_config
                ),
                "batch_norm": (
                    keras.saving.serialize_keras_object(self.batch_norm)
                    if self.batch_norm is not None
                    else None
                ),
                "activation": (
                    keras.activations.serialize(self.activation)
                    if self.activation is not None
                    else None
                ),
                "quantize_output": self.quantize_output,
                "preserve_sparsity": self.preserve_sparsity,
                "preserve_clusters": self.preserve_clusters,
                "scheme": keras.saving.serialize_keras_object(self.scheme),
            }
        )
        return config
