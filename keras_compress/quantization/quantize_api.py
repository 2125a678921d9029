"""`quantize_model` and `quantize_apply`: the entry points of QAT.

How a Sequential or Functional model is rewritten (nested ones too):

1. **Plan.** Each layer is sorted by the scheme: quantized (wrapped in a
   `QuantizeWrapper`), pass-through (copied: LiteRT runs it on int8 with its
   input's scale) or left float (copied, with a warning).
2. **Fuse.** On the model's graph: a BatchNormalization whose input comes
   only from a Dense/convolution is folded into that layer's wrapper (any
   other one is quantized as the MUL and ADD LiteRT runs it as); a
   ReLU/ReLU6 after it becomes the wrapper's activation (LiteRT fuses both
   into one op, so there is no quantizer between them); the layers feeding
   a Concatenate drop their output quantizer, so that the converter gives
   all of them the Concatenate's scale; an Add followed by a ReLU leaves
   the quantizing to the ReLU (LiteRT fuses ADD+RELU).
3. **Rebuild.** The graph is run on new inputs with copies of the layers,
   keeping track of which tensors are quantized. A quantized layer whose
   input is float (a model input, or the output of a float layer) gets a
   `QuantizeLayer` in front: the QUANTIZE op of the converted file.
"""

import dataclasses
import inspect
import warnings

import keras
import numpy as np

from keras_compress import core
from keras_compress import rewrite
from keras_compress.core import batch_norm as core_batch_norm
from keras_compress.core import keras_private
from keras_compress.quantization import annotate as annotate_lib
from keras_compress.quantization import batch_norm_folding as folding
from keras_compress.quantization import computations as computations_lib
from keras_compress.quantization import quantize_config as config_lib
from keras_compress.quantization import quantize_layer as quantize_layer_lib
from keras_compress.quantization import quantized_model as qmodel_lib
from keras_compress.quantization import schemes as schemes_lib
from keras_compress.quantization import wrapper as wrapper_lib

# `preserve_sparsity=None` keeps the zeros of weights at least this sparse:
# what pruning leaves (a trained float weight has no exact zeros).
AUTO_SPARSITY_THRESHOLD = 0.1

# Layers whose last LiteRT op (ADD, SUB, MUL) fuses a following ReLU; an
# unfolded BatchNormalization, a Normalization or a Rescaling runs as MUL
# then ADD.
_ENDS_IN_ADD = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
) + computations_lib.AFFINE_LAYERS


@dataclasses.dataclass
class _Plan:
    """What happens to one layer of a graph model."""

    # "wrap", "pass", "float", "drop" (fused away), "nested" (a graph model)
    # or "subclassed" (a nested subclassed model)
    role: str
    layer: object = None  # the layer to copy (unwrapped from annotations)
    config: object = None
    batch_norm: object = None
    activation: str = None
    quantize_output: bool = True
    owner: object = None  # for "drop": the layer it is fused into
    # A `keras.ops` Add/Subtract/Multiply computed by a Merge layer, which
    # takes the operation's two arguments as one list.
    merges_arguments: bool = False
    why_float: str = None  # for "float": why, if it should be quantized


def quantize_model(
    model,
    scheme="default_8bit",
    layers_to_quantize=None,
    quantize_configs=None,
    preserve_sparsity=None,
    preserve_clusters=False,
):
    """Returns a copy of `model` ready for quantization-aware training.

    The copy fake-quantizes the weights of Dense, EinsumDense and
    convolution layers (per channel for convolutions), the outputs of
    layers that compute new values, and the model inputs, with BatchNorms
    folded and ReLUs fused as LiteRT will run them. Transformer blocks are
    quantized too: MultiHeadAttention (its projections, both products and
    the softmax) and LayerNormalization (each of its steps) run on int8
    kernels in the converted file. Train it like the original (a few epochs at a
    low learning rate from the trained float weights); the activation
    ranges are learned in training. Then `keras_compress.convert.to_tflite(
    qat_model, "int8")` gives a file with integer kernels that computes what
    the Keras model computes.

    Supported: Sequential and Functional models, nested ones included,
    and subclassed models (returned as a `QuantizedModel`, which quantizes
    their layers but cannot fold BatchNorms or quantize math written in
    their `call()`; see `quantized_model.py`). Layers the scheme cannot
    quantize stay float, with a warning naming them (an error if named in
    `layers_to_quantize`).

    Args:
        model: A built `keras.Model`. It is not changed.
        scheme: `"default_8bit"`, `"4bit_weights"` (4-bit weights, 8-bit
            activations; `"experimental_4bit_weights"` is the same) or a
            `QuantizeScheme`.
        layers_to_quantize: `None` (every layer the scheme supports), a
            list of layer names, or a callable `f(layer) -> bool`.
        quantize_configs: Optional dict `{layer name: QuantizeConfig}` for
            per-layer settings or custom layers, or `{layer name: scheme}`
            (a scheme name or `QuantizeScheme`) for another precision per
            layer: `scheme="4bit_weights", quantize_configs={"head":
            "default_8bit"}` trains 4-bit weights except in `head`. These
            layers are quantized.
        preserve_sparsity: `True` keeps zero weights at zero during QAT
            (for pruned models), `False` never does, `None` does it for
            each weight that is at least 10 % zeros.
        preserve_clusters: `True` keeps the clusters of a clustered model
            (after `keras_compress.clustering.strip_clustering`) during
            QAT: the weights with the same value when QAT starts stay
            equal (at their mean), zeros stay zero, so the int8 file keeps
            at most that many distinct values per channel.

    Returns:
        A new, uncompiled `keras.Model` of the same kind.

    Example:

    ```python
    qat = kc.quantization.quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    qat.fit(x_train, y_train, epochs=2)
    blob = kc.convert.to_tflite(qat, "int8")
    ```
    """
    return _quantize(
        model,
        scheme,
        layers_to_quantize,
        quantize_configs,
        preserve_sparsity,
        annotated_only=False,
        preserve_clusters=preserve_clusters,
    )


def quantize_apply(model, scheme="default_8bit", preserve_sparsity=None):
    """Quantizes only the layers marked with `quantize_annotate_layer`.

    Args:
        model: A built Sequential or Functional model containing
            `QuantizeAnnotate` layers.
        scheme: As in `quantize_model`.
        preserve_sparsity: As in `quantize_model`.

    Returns:
        A new model; annotated layers are quantized, the others stay float
        (pass-through layers run on int8 where their input is).
    """
    if not any(
        isinstance(layer, annotate_lib.QuantizeAnnotate)
        for layer in _all_layers(model)
    ):
        raise ValueError(
            f"quantize_apply(): model '{model.name}' has no layer annotated "
            "with quantize_annotate_layer(). Annotate the layers to "
            "quantize, or call quantize_model() to quantize all of them."
        )
    return _quantize(
        model, scheme, None, None, preserve_sparsity, annotated_only=True
    )


def _all_layers(model):
    return [layer for _, layer in rewrite.iter_layers(model, True)]


def _quantize(
    model,
    scheme,
    layers_to_quantize,
    quantize_configs,
    preserve_sparsity,
    annotated_only,
    preserve_clusters=False,
):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "quantize_model() takes a keras.Model; received "
            f"{type(model).__name__}. To quantize one layer, wrap it in "
            "keras_compress.quantization.QuantizeWrapper."
        )
    if preserve_sparsity not in (None, True, False):
        raise ValueError(
            "`preserve_sparsity` must be None (auto), True or False; "
            f"received {preserve_sparsity!r}."
        )
    if preserve_clusters not in (True, False):
        raise ValueError(
            "`preserve_clusters` must be True or False; received "
            f"{preserve_clusters!r}."
        )
    scheme = schemes_lib.get_scheme(scheme)
    rewrite.check_built(model)
    for layer in [model] + _all_layers(model):
        state = core.compression_state(layer)
        owned = (
            layer.wrappers[0].technique
            if isinstance(layer, core.OwningModel) and layer.wrappers
            else None
        )
        if layer is not model and (state.pruned or owned == "pruning"):
            raise ValueError(
                f"Layer '{layer.name}' still carries pruning state. Call "
                "keras_compress.pruning.strip_pruning(model) first; "
                "quantize_model() then keeps the zeros (preserve_sparsity)."
            )
        if state.clustered or owned == "clustering":
            raise ValueError(
                f"Layer '{layer.name}' still carries clustering state. Call "
                "keras_compress.clustering.strip_clustering(model) first; "
                "quantize_model(..., preserve_clusters=True) then keeps the "
                "clusters."
            )
        if isinstance(
            layer,
            (wrapper_lib.QuantizeWrapper, quantize_layer_lib.QuantizeLayer),
        ):
            raise ValueError(
                f"Model '{model.name}' is already quantized (layer "
                f"'{layer.name}')."
            )
    check_supported(model, quantize_configs)
    rewriter = _Rewriter(
        scheme,
        layers_to_quantize,
        quantize_configs,
        preserve_sparsity,
        annotated_only,
        _all_layers(model),
        preserve_clusters,
    )
    if rewrite.is_graph_model(model):
        result, _ = rewriter.quantize_graph(model, input_states=None)
    else:
        result = rewriter.quantize_subclassed(model, quantize_inputs=True)
    rewriter.report()
    return result


def check_supported(model, quantize_configs=None):
    """Refuses recurrent layers (LSTM, GRU, ...) that have no QuantizeConfig.

    QAT has no fake-quant simulation of a time loop, and LiteRT's int8 file
    computes the unrolled loop's gates in int8 with the fixed LOGISTIC/TANH
    output scales: on a small Embedding + LSTM model the file's outputs were
    up to 22 quantization steps away from the trained model's. A model
    that trains without error and then disagrees with its file is worse than
    a refusal before training. `compress()` calls this for its QAT steps
    before any step trains.

    Args:
        model: The model to quantize.
        quantize_configs: `quantize_model`'s argument: a recurrent layer
            given a QuantizeConfig of its own is the user's choice.

    Raises:
        ValueError: Naming the first recurrent layer and what to do.
    """
    for layer in _all_layers(model):
        if not isinstance(
            layer, (keras.layers.RNN, keras.layers.Bidirectional)
        ) or layer.name in (quantize_configs or {}):
            continue
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is recurrent, "
            "and quantization-aware training cannot simulate it: an int8 "
            "file would compute its loop in int8 with fixed gate scales, "
            "not what the trained model computes. Train the model in float "
            "and convert it after training instead: "
            "`to_tflite(model, 'dynamic')` (int8 weights, float "
            "activations) or `to_tflite(model, 'int8', "
            "representative_data=x)` (post-training int8; check its "
            "accuracy with `verify`)."
        )


def _layer_scheme(name, scheme, layer):
    """The `QuantizeScheme` of `quantize_configs[name]`, for a layer it can
    apply to: one layer, not a model or block of layers (their layers are
    named one by one)."""
    scheme = schemes_lib.get_scheme(scheme)
    if layer is not None and (
        isinstance(layer, keras.Model) or rewrite.opens_up(layer)
    ):
        raise ValueError(
            f"quantize_configs['{name}'] gives scheme '{scheme.name}' to "
            f"'{name}' ({type(layer).__name__}), which is made of layers. "
            "A scheme applies to one layer: name the layers inside it."
        )
    return scheme


class _Rewriter:
    """Plans and rebuilds graph models (one per quantize_model call)."""

    def __init__(
        self,
        scheme,
        layers_to_quantize,
        quantize_configs,
        preserve_sparsity,
        annotated_only,
        all_layers,
        preserve_clusters=False,
    ):
        self.scheme = scheme
        self.preserve_sparsity = preserve_sparsity
        self.preserve_clusters = preserve_clusters
        self.annotated_only = annotated_only
        self.quantize_configs = {}
        # {layer name: QuantizeScheme} whose config a layer takes instead
        # of `scheme`'s: another precision for that layer.
        self.layer_schemes = {}
        by_name = {layer.name: layer for layer in all_layers}
        for name, config in (quantize_configs or {}).items():
            if isinstance(config, (str, schemes_lib.QuantizeScheme)):
                self.layer_schemes[name] = _layer_scheme(
                    name, config, by_name.get(name)
                )
                continue
            config_lib.check_quantize_config(
                config, f"quantize_configs['{name}']"
            )
            self.quantize_configs[name] = config
        names = set(by_name)
        self.named = set(self.quantize_configs) | set(self.layer_schemes)
        self.select = None
        if callable(layers_to_quantize):
            self.select = layers_to_quantize
        elif layers_to_quantize is not None:
            if isinstance(layers_to_quantize, str):
                layers_to_quantize = [layers_to_quantize]
            self.named |= set(layers_to_quantize)
            chosen = set(layers_to_quantize)
            self.select = lambda layer: layer.name in chosen
        missing = sorted(self.named - names)
        if missing:
            raise ValueError(
                f"Layers {missing} named in `layers_to_quantize`/"
                f"`quantize_configs` are not in the model. Layers: "
                f"{sorted(names)}."
            )
        self.float_layers = []
        self.quantized = []
        self._plans = {}  # id(graph model) -> (nodes, plans), planned once
        # id(layer) -> its new layer, across nested graphs: a layer the
        # outer graph shares with a nested one (a causal LM's tied
        # embedding, called again with `reverse=True`) stays one layer.
        self._new_layers = {}

    # Planning.

    def _opens_up(self, layer):
        """Whether `layer` is quantized from the inside: a subclassed model,
        or a custom layer made of layers that declares no QuantizeConfig
        of its own (`get_quantize_config()`, an annotation or
        `quantize_configs`)."""
        annotated = isinstance(layer, annotate_lib.QuantizeAnnotate)
        inner = layer.layer if annotated else layer
        if isinstance(inner, keras.Model):
            return rewrite.opens_up(inner)
        declared = (
            (annotated and layer.quantize_config is not None)
            or layer.name in self.quantize_configs
            or hasattr(inner, "get_quantize_config")
        )
        return rewrite.opens_up(inner) and not declared

    def _plan_layer(self, layer):
        if isinstance(layer, keras.layers.InputLayer):
            return _Plan("pass", layer)
        if rewrite.is_graph_model(layer):
            return _Plan("nested", layer)
        annotated = isinstance(layer, annotate_lib.QuantizeAnnotate)
        inner = layer.layer if annotated else layer
        name = layer.name
        explicit = annotated or name in self.named
        if self._opens_up(layer):  # a subclassed model, a custom block
            return _Plan("subclassed", inner)
        if self.scheme.is_pass_through(inner) and not (
            annotated and layer.quantize_config is not None
        ):
            return _Plan("pass", inner)
        wanted = explicit or (
            not self.annotated_only
            and (self.select is None or bool(self.select(layer)))
        )
        if not wanted:
            return _Plan("float", inner)
        config = self.quantize_configs.get(name)
        scheme = self.layer_schemes.get(name, self.scheme)
        if config is None and name in self.layer_schemes:
            config = scheme.get_quantize_config(inner)
        if config is None and annotated:
            config = layer.quantize_config
        if config is None and hasattr(inner, "get_quantize_config"):
            config = inner.get_quantize_config()
        if config is None:
            config = self.scheme.get_quantize_config(inner)
        if config is None:
            if explicit:
                raise ValueError(
                    f"Layer '{name}' ({type(inner).__name__}) was asked to "
                    f"be quantized, but scheme '{scheme.name}' cannot "
                    "quantize it. Give it a QuantizeConfig (quantize_configs"
                    "={name: config}) or leave it out."
                )
            why = f"scheme '{self.scheme.name}' does not support it"
            if isinstance(inner, keras.layers.BatchNormalization):
                why = "not after a Dense or convolution it can be folded into"
            return _Plan("float", inner, why_float=why)
        activation = schemes_lib.activation_name(
            getattr(inner, "activation", None)
        )
        if (
            computations_lib.takes_activation(inner)
            and activation is not None
            and activation not in schemes_lib.INTEGER_ACTIVATIONS
        ):
            self.float_layers.append(
                (
                    name,
                    type(inner).__name__,
                    f"its activation '{activation}' has no int8 kernel in "
                    "LiteRT; the layer itself is quantized",
                )
            )
        return _Plan("wrap", inner, config=config)

    def _plan_graph(self, graph, model):
        calls = rewrite.graph_calls(graph)
        nodes, uses, consumers = calls.nodes, calls.uses, calls.consumers
        plans = {}
        node_of = {}
        for node in nodes:
            op = node.operation
            if id(op) in plans:
                continue
            node_of[id(op)] = node
            merge = keras_private.merge_layer_class(node)
            if merge is None:
                plans[id(op)] = self._plan_layer(op)
                continue
            # `x + y` written in a Functional model is a `keras.ops` Add,
            # not a layer: quantized as the Merge layer computing the same.
            plan = self._plan_layer(merge(name=op.name))
            plan.merges_arguments = plan.role == "wrap"
            if not plan.merges_arguments:
                plan = self._plan_layer(op)
            plans[id(op)] = plan

        def owner_of(tensor):
            """The layer whose output `tensor` is, after fusing."""
            layer = keras_private.producer(tensor)
            plan = plans.get(id(layer))
            if plan is not None and plan.role == "drop":
                return plan.owner
            return layer

        for node in nodes:
            op = node.operation
            plan = plans[id(op)]
            if len(node.input_tensors) != 1 or uses[id(op)] != 1:
                continue
            (tensor,) = node.input_tensors
            source = owner_of(tensor)
            source_plan = plans.get(id(source))
            if (
                source_plan is not None
                and source_plan.role == "nested"
                and calls.sole_consumer(tensor) is op
                and uses[id(source)] == 1
            ):
                # A nested model ending in Conv/Dense (-> BN), then a ReLU
                # out here: LiteRT fuses them into one op, so the ReLU
                # moves into the nested model's last wrapper.
                relu = schemes_lib.relu_layer_activation(plan.layer)
                last = self._fusable_output(source) if relu else None
                if last is not None:
                    last.activation = relu
                    plans[id(op)] = _Plan("drop", plan.layer, owner=source)
                continue
            exclusive = (
                calls.sole_consumer(tensor) is op
                and source_plan is not None
                and source_plan.role == "wrap"
                and uses[id(source)] == 1
            )
            if not exclusive:
                continue
            # Conv/Dense -> BatchNormalization: fold (the rule shared with
            # fold_batch_norms), unless the plan already gave the source
            # a BatchNorm or an activation.
            if (
                isinstance(plan.layer, keras.layers.BatchNormalization)
                and plan.role in ("float", "wrap")
                and source_plan.batch_norm is None
                and source_plan.activation is None
                and core_batch_norm.fold_source(node, calls)[0] is source
            ):
                source_plan.batch_norm = plan.layer
                plans[id(op)] = _Plan("drop", plan.layer, owner=source)
                continue
            relu = schemes_lib.relu_layer_activation(plan.layer)
            if relu is None:
                continue
            # Conv/Dense (-> BN) -> ReLU/ReLU6: one op in LiteRT.
            if (
                computations_lib.takes_activation(source_plan.layer)
                and source_plan.activation is None
                and wrapper_lib._is_linear(
                    getattr(source_plan.layer, "activation", None)
                )
            ):
                source_plan.activation = relu
                plans[id(op)] = _Plan("drop", plan.layer, owner=source)
            elif isinstance(source_plan.layer, _ENDS_IN_ADD) and (
                plan.role == "wrap"
            ):
                # ADD with a fused ReLU: only the ReLU's range is needed.
                source_plan.quantize_output = False

        for node in nodes:
            plan = plans[id(node.operation)]
            if plan.role == "wrap" and isinstance(
                plan.layer, keras.layers.Concatenate
            ):
                for tensor in node.input_tensors:
                    self._share_concat_scale(
                        tensor,
                        node.operation,
                        plans,
                        uses,
                        consumers,
                        owner_of,
                        node_of,
                    )
        for plan in plans.values():
            if plan.role == "float" and plan.why_float:
                self.float_layers.append(
                    (plan.layer.name, type(plan.layer).__name__, plan.why_float)
                )
        return nodes, plans

    def _planned(self, model):
        """`(nodes, plans)` of a graph model, planned once per rewrite."""
        if id(model) not in self._plans:
            graph = keras_private.functional_graph(model)
            self._plans[id(model)] = self._plan_graph(graph, model)
        return self._plans[id(model)]

    def _fusable_output(self, model):
        """The plan of the wrapper that computes nested `model`'s only
        output, if an activation can be fused into it; else `None`."""
        graph = keras_private.functional_graph(model)
        if len(graph.outputs) != 1:
            return None
        _, plans = self._planned(model)
        calls = rewrite.graph_calls(graph)
        (tensor,) = graph.outputs
        if calls.consumers.get(id(tensor)) != [None]:
            return None
        layer = keras_private.producer(tensor)
        plan = plans.get(id(layer))
        if plan is not None and plan.role == "drop":
            layer, plan = plan.owner, plans.get(id(plan.owner))
        if (
            plan is None
            or plan.role != "wrap"
            or calls.uses.get(id(layer)) != 1
            or not computations_lib.takes_activation(plan.layer)
            or plan.activation is not None
            or not wrapper_lib._is_linear(
                getattr(plan.layer, "activation", None)
            )
        ):
            return None
        return plan

    def _share_concat_scale(
        self, tensor, consumer, plans, uses, consumers, owner_of, node_of
    ):
        # The converter needs one scale for all inputs and the output of a
        # CONCATENATION: the producers leave their output unquantized and
        # the converter gives them the Concatenate's range.
        while True:
            if consumers.get(id(tensor)) != [consumer]:
                return
            producer = owner_of(tensor)
            plan = plans.get(id(producer))
            if plan is None or uses[id(producer)] != 1:
                return
            if plan.role == "pass" and not isinstance(
                producer, keras.layers.InputLayer
            ):
                inputs = node_of[id(producer)].input_tensors
                if len(inputs) != 1:
                    return
                consumer, tensor = producer, inputs[0]
                continue
            if plan.role == "wrap":
                activation = plan.activation
                if isinstance(plan.layer, keras.layers.Activation):
                    activation = schemes_lib.activation_name(
                        plan.layer.activation
                    )
                fixed = activation in schemes_lib.FIXED_OUTPUT_RANGES or (
                    isinstance(plan.layer, keras.layers.Softmax)
                )
                if not fixed:
                    plan.quantize_output = False
            return

    # Rebuilding.

    def quantize_graph(self, model, input_states):
        """Returns `(new_model, output_states)` for a graph model."""
        graph = keras_private.functional_graph(model)
        nodes, plans = self._planned(model)
        new_inputs = [
            keras.Input(
                batch_shape=t.shape,
                dtype=t.dtype,
                name=keras_private.producer(t).name,
            )
            for t in graph.inputs
        ]
        states = {}
        for index, tensor in enumerate(new_inputs):
            quantized = bool(input_states and input_states[index])
            states[id(tensor)] = (tensor, quantized)
        context = {
            "plans": plans,
            "states": states,
            "new_layers": self._new_layers,
            "quantize_layers": {},
            "called": [],
            "names": {layer.name for layer in graph.layers},
        }

        def call_fn(op, *args, **kwargs):
            return self._call(context, op, args, kwargs)

        outputs = keras_private.run_through_graph(graph, new_inputs, call_fn)
        output_states = [
            states.get(id(t), (t, False))[1]
            for t in keras.tree.flatten(outputs)
        ]
        if isinstance(model, keras.Sequential):
            if len(new_inputs) != 1:
                raise ValueError(
                    f"Sequential model '{model.name}' has several inputs."
                )
            result = keras.Sequential(
                [new_inputs[0]] + context["called"], name=model.name
            )
        else:
            inputs = (
                keras.tree.pack_sequence_as(model.input, new_inputs)
                if isinstance(model.input, (list, tuple, dict))
                else new_inputs[0]
            )
            result = keras.Model(inputs, outputs, name=model.name)
        return result, output_states

    def _call(self, context, op, args, kwargs):
        plan = context["plans"][id(op)]
        states = context["states"]
        if plan.role == "drop":
            return args[0]
        flat_inputs = [
            t
            for t in keras.tree.flatten((args, kwargs))
            if isinstance(t, keras.KerasTensor)
        ]
        input_states = [states.get(id(t), (t, False))[1] for t in flat_inputs]

        if plan.role in ("wrap", "nested", "subclassed"):
            if plan.role in ("wrap", "subclassed"):
                args, kwargs = keras.tree.map_structure(
                    lambda t: (
                        self._quantized(context, t)
                        if isinstance(t, keras.KerasTensor)
                        else t
                    ),
                    (args, kwargs),
                )
                input_states = [True] * len(flat_inputs)
            layer = self._new_layer(context, op, plan, input_states)
        else:
            layer = self._new_layer(context, op, plan, input_states)
        if plan.merges_arguments:
            args = (list(args),)
        if (
            "mask" in kwargs
            and "mask" not in inspect.signature(layer.call).parameters
        ):
            kwargs.pop("mask")
        outputs = layer(*args, **kwargs)
        if not any(layer is seen for seen in context["called"]):
            context["called"].append(layer)
        if plan.role == "wrap":
            if layer.preserve_sparsity:
                layer.set_masks_from_weights()
            if layer.preserve_clusters:
                layer.set_clusters_from_weights()
            output_state = [True]
        elif plan.role == "nested":
            output_state = context["nested_states"][id(op)]
        elif plan.role == "subclassed":
            # A custom block's output is whatever its Python code computes
            # last (often a residual `x + y`, float in the file): quantized
            # where an int8 op reads it.
            output_state = [
                isinstance(layer, qmodel_lib.QuantizedModel)
                and isinstance(plan.layer, keras.Model)
            ]
        elif plan.role == "pass":
            output_state = [all(input_states)]
        else:
            output_state = [False]
        flat_outputs = keras.tree.flatten(outputs)
        if len(output_state) != len(flat_outputs):
            output_state = [all(output_state)] * len(flat_outputs)
        for tensor, state in zip(flat_outputs, output_state):
            states[id(tensor)] = (tensor, state)
        return outputs

    def _quantized(self, context, tensor):
        """`tensor`, behind a QuantizeLayer if it is float."""
        states = context["states"]
        if states.get(id(tensor), (tensor, False))[1]:
            return tensor
        if not keras.backend.is_float_dtype(tensor.dtype):
            return tensor  # token ids, masks: integers stay exact
        cache = context["quantize_layers"]
        if id(tensor) not in cache:
            source = keras_private.producer(tensor)
            base = "quantize_input"
            if not isinstance(source, keras.layers.InputLayer):
                base = f"quantize_{source.name}"
            name, index = base, 1
            while name in context["names"]:
                name, index = f"{base}_{index}", index + 1
            context["names"].add(name)
            layer = quantize_layer_lib.QuantizeLayer(
                self.scheme.input_quantizer(), name=name
            )
            quantized = layer(tensor)
            context["called"].append(layer)
            states[id(quantized)] = (quantized, True)
            cache[id(tensor)] = (tensor, quantized)
        return cache[id(tensor)][1]

    def _new_layer(self, context, op, plan, input_states):
        cache = context["new_layers"]
        if id(op) in cache:
            return cache[id(op)]
        if plan.role == "nested":
            layer, output_states = self.quantize_graph(op, input_states)
            context.setdefault("nested_states", {})[id(op)] = output_states
        elif plan.role == "subclassed":
            # Its inputs are quantized in front of it, by this graph.
            layer = self.quantize_subclassed(op, quantize_inputs=False)
        elif plan.role == "wrap":
            copy = rewrite.copy_layer(plan.layer)
            batch_norm = None
            if plan.batch_norm is not None:
                batch_norm = rewrite.copy_layer(plan.batch_norm)
            layer = wrapper_lib.QuantizeWrapper(
                copy,
                quantize_config=plan.config,
                batch_norm=batch_norm,
                activation=plan.activation,
                quantize_output=plan.quantize_output,
                preserve_sparsity=self._keeps_sparsity(plan),
                preserve_clusters=self.preserve_clusters,
                scheme=self.scheme,
                name=f"quant_{plan.layer.name}",
            )
            self.quantized.append(op.name)
        else:
            layer = rewrite.copy_layer(plan.layer)
        cache[id(op)] = layer
        return layer

    def quantize_subclassed(self, model, quantize_inputs):
        """A `QuantizedModel` around a copy of a subclassed model.

        Returns a plain copy if none of its layers is quantized.
        """
        copy = rewrite.copy_layer(model)
        originals = rewrite.leaf_layers(model)
        copies = rewrite.leaf_layers(copy)
        # The sub-layers of a composite layer (MultiHeadAttention's
        # projections and softmax) belong to it: quantized (or not) with it.
        # A custom block inside (`rewrite.opens_up`) is opened in turn: its
        # own sub-layers are planned one by one.
        inner = {
            id(sub)
            for layer in originals
            if not self._opens_up(layer)
            for sub in keras_private.flatten_layers(layer, include_self=False)
        }
        plans = [
            None
            if id(original) in inner or self._opens_up(original)
            else self._plan_layer(original)
            for original in originals
        ]
        # BatchNorms right after a quantized layer fold into it, as in
        # graph models (found by running the model's Python forward pass).
        wrapped = [
            copied
            for copied, plan in zip(copies, plans)
            if plan is not None and plan.role == "wrap"
        ]
        position = {id(layer): index for index, layer in enumerate(copies)}
        folds = {
            position[id(layer)]: position[id(batch_norm)]
            for layer, batch_norm in folding.subclassed_fold_pairs(
                copy, wrapped, rewrite.built_input_shape(model)
            )
        }
        folded = set(folds.values())
        entries = []
        for index, (original, copied) in enumerate(zip(originals, copies)):
            plan = plans[index]
            if plan is None or index in folded:
                continue
            if plan.role == "wrap":
                entry = {
                    "index": index,
                    "class_name": type(copied).__name__,
                    "quantize_config": plan.config,
                    "preserve_sparsity": self._keeps_sparsity(plan),
                    "preserve_clusters": self.preserve_clusters,
                }
                if index in folds:
                    entry["batch_norm_index"] = folds[index]
                entries.append(entry)
                self.quantized.append(original.name)
            elif plan.role == "float" and plan.why_float:
                self.float_layers.append(
                    (original.name, type(original).__name__, plan.why_float)
                )
        if not entries:
            return copy
        result = qmodel_lib.QuantizedModel(
            copy,
            entries,
            scheme=self.scheme,
            quantize_inputs=quantize_inputs,
            name=model.name,
        )
        rewrite.call_symbolically(result, rewrite.built_input_shape(model))
        for wrapper in result.wrappers:
            if wrapper.preserve_sparsity:
                wrapper.set_masks_from_weights()
            if wrapper.preserve_clusters:
                wrapper.set_clusters_from_weights()
        return result

    def _keeps_sparsity(self, plan):
        if self.preserve_sparsity is not None:
            return self.preserve_sparsity
        if not plan.layer.built:
            return False
        for variable, _ in plan.config.get_weights_and_quantizers(plan.layer):
            values = np.asarray(variable.numpy())
            if values.size and (
                np.mean(values == 0) >= AUTO_SPARSITY_THRESHOLD
            ):
                return True
        return False

    def report(self):
        """Warns about the layers left in float."""
        if not self.quantized:
            raise ValueError(
                "No layer was quantized: the scheme supports none of the "
                "selected layers. Quantizable: Dense, EinsumDense, Conv1D, "
                "Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, "
                "MultiHeadAttention, LayerNormalization, Add, Concatenate, "
                "pooling and activation layers."
            )
        for name, class_name, why in self.float_layers:
            warnings.warn(
                f"Layer '{name}' ({class_name}) is not fully quantized "
                f"({why}). Unless the converter quantizes it from the ranges "
                "around it, LiteRT runs it in float between DEQUANTIZE and "
                "QUANTIZE ops. Give it a QuantizeConfig through "
                "`quantize_configs` to quantize it.",
                stacklevel=4,
            )
