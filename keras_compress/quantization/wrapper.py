"""`QuantizeWrapper`: a layer trained with fake-quantized weights and output.

What one wrapper computes, in order (each step only if it applies):

1. the weights its `QuantizeConfig` names, with a folded BatchNormalization
   (`batch_norm_folding.py`), fake-quantized;
2. the wrapped layer's computation with those weights in place of its
   variables: its own `call` (in a `keras.StatelessScope`: the layer's code
   runs unchanged), or, for the layers whose own `call` does not give the
   converter one integer op per quantized tensor, the computation
   registered for their class (`computations.py`);
3. the activation: ReLU/ReLU6 directly (LiteRT fuses them into the op
   before), any other one between a quantizer of its input and its output;
4. the output quantizer (moving-average min/max, or a fixed range after
   sigmoid/softmax/tanh).

The wrapper knows no layer kind: what differs between kinds lives in
their `QuantizeConfig` (which tensors are quantized, how) and their
`QuantizedComputation` (how the layer is computed).
"""

import warnings

import keras
from keras import ops

from keras_compress import core
from keras_compress.clustering import constraints as cluster_constraints
from keras_compress.core import keras_private
from keras_compress.core import tracing
from keras_compress.quantization import batch_norm_folding as folding
from keras_compress.quantization import computations as computations_lib
from keras_compress.quantization import quantize_config as config_lib
from keras_compress.quantization import quantizers as quantizers_lib
from keras_compress.quantization import schemes as schemes_lib

_PACKAGE = "keras_compress"


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
            if computations_lib.takes_activation(layer) and not _is_linear(
                own_activation
            ):
                raise ValueError(
                    f"Layer '{layer.name}' already has activation "
                    f"'{schemes_lib.activation_name(own_activation)}'; "
                    f"cannot add activation={activation!r} after it."
                )
        elif computations_lib.takes_activation(layer) and not _is_linear(
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
        self._computation_specs = {}
        self._intermediate_specs = {}
        self._masks = []
        self._cluster_ids = []
        self._range_source = None
        # Grids of the inputs a bias is added on (see `quantize_bias`):
        # "inputs", or "query", "key" and "value" of an attention layer.
        self._input_grids = {}

    technique = "quantization"

    @property
    def computation(self):
        """The `QuantizedComputation` of the wrapped layer's class."""
        return computations_lib.computation_for(self.layer)

    def __call__(self, *args, **kwargs):
        if args and isinstance(
            keras.tree.flatten(args[0])[0], keras.KerasTensor
        ):
            # Decided on the graph (when the model is built or loaded).
            self._input_grids = self._find_input_grids(args, kwargs)
        if (
            self.quantize_output
            and self.computation.same_scale
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
        tensors = self.computation.bias_inputs(args, kwargs)
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
        computation = self.computation
        output_shape = computation.output_shape(self.layer, input_shape)
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

        self._computation_specs = {}
        for name, quantizer in computation.internal_quantizers(
            self.scheme
        ).items():
            state = quantizer.build(None, name, self)
            self._computation_specs[name] = (quantizer, state)

        self._intermediate_specs = {}
        getter = getattr(
            self.quantize_config, "get_intermediate_quantizers", None
        )
        for name, quantizer in (getter(layer) if getter else {}).items():
            state = quantizer.build(None, name, self)
            self._intermediate_specs[name] = (quantizer, state)
        required = computation.required_intermediates
        missing = sorted(set(required) - set(self._intermediate_specs))
        if missing:
            raise ValueError(
                f"The quantize config of {type(layer).__name__} "
                f"'{layer.name}' has no intermediate quantizers for "
                f"{missing}: LiteRT needs a range for each of "
                f"{list(required)}."
            )

        self._masks = []
        if self.preserve_sparsity:
            for variable, _, _ in self._weight_specs:
                # Set from the weights by set_masks_from_weights().
                self._masks.append(core.add_mask(self, variable))

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
        computation = self.computation
        values = dict(computation.float_values(layer))
        scale = offset = None
        if self.batch_norm is not None:
            scale, offset = folding.fold_factors(self.batch_norm)
        folded = None
        if scale is not None:
            folded = getattr(layer, folding.folded_weight_name(layer))
        # id(kernel) -> its grid step, for the biases added to its product.
        weight_steps = {}
        for variable, quantizer, state in self._weight_specs:
            weight = self._prepare(variable, folded, scale)
            values[id(variable)] = quantizer(weight, training, state)
            if hasattr(quantizer, "weight_step"):
                weight_steps[id(variable)] = quantizer.weight_step(weight)
        if folded is not None and id(folded) not in values:
            values[id(folded)] = self._prepare(folded, folded, scale)
        forward = computations_lib.ForwardPass(
            self, values, weight_steps, training
        )

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
            kernel = computation.bias_kernel(layer, len(inputs.shape))
        input_step = self._input_step("inputs")
        if (
            kernel is not None
            and input_step is not None
            and id(kernel) in weight_steps
        ):
            step = weight_steps[id(kernel)]
            if getattr(layer, "bias", None) is not None:
                values[id(layer.bias)] = quantizers_lib.quantize_bias(
                    forward.weight(layer.bias), input_step, step
                )
            elif extra_bias is not None:
                extra_bias = quantizers_lib.quantize_bias(
                    extra_bias, input_step, step
                )

        outputs = computation.call(forward, inputs, args, kwargs)
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
                computation.rounds_to_input_grid
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

    def _prepare(self, variable, folded, scale):
        """The float32 value of a weight before quantization."""
        projected = core.constraints.forward_value(variable)
        if projected is None:
            projected = ops.convert_to_tensor(variable)
        weight = ops.cast(projected, "float32")
        if variable is folded:
            weight = folding.scale_kernel(self.layer, weight, scale)
        return self.computation.prepare_weight(self.layer, variable, weight)

    def compute_output_shape(self, input_shape):
        return self.computation.output_shape(self.layer, input_shape)

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
        specs.extend(self._computation_specs.items())
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
