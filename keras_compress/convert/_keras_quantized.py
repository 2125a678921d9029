"""Float copies of models quantized with Keras's own `Model.quantize()`.

Keras's `Model.quantize("int8")` stores int8 kernels with a per-channel
scale and computes `matmul(quantize(x), q) / (x_scale * kernel_scale)` with
an int8 matmul. Neither converter can express that graph: LiteRT's
`tfl.fully_connected` rejects the int8 operand of a float op, and ONNX's
`MatMul` has no int8 version.

The converters therefore work on a float copy whose kernels are the
dequantized int8 kernels, `q / kernel_scale`. Converted with
`to_tflite(mode="dynamic")` (or `"int8"`/`"int16x8"`) the LiteRT quantizer
quantizes those kernels again, per output channel with `scale = max|w| /
127`, which gives back exactly Keras's integers, because Keras's kernels
already span [-127, 127] in every channel. So the file has the same int8
kernels as the Keras model, and LiteRT's dynamic-range kernels quantize the
activations on the fly, as Keras does. This is simpler and less fragile
than writing the int8 tensors into the flatbuffer ourselves, and it gives
the same weights.
"""

import keras
import numpy as np

from keras_compress import rewrite
from keras_compress.convert import _graph
from keras_compress.core import keras_private

# The layer classes `Model.quantize("int8")` changes in Keras 3.13-3.15.
# Other subclasses have their own quantized variables and are refused
# below rather than converted wrongly. A ReversibleEmbedding with tied
# weights (a causal LM's table and head) stores what an Embedding stores.
_SUPPORTED_MODES = ("int8",)


def _supported_classes():
    return (
        keras.layers.Dense,
        keras.layers.EinsumDense,
        keras.layers.Embedding,
        keras.layers.ReversibleEmbedding,
    )


def _quantization_mode(layer):
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "quantization_mode", None)


def quantized_layers(model):
    """`[(path, layer, mode)]` of the Keras-quantized layers in `model`."""
    return [
        (path, layer, _quantization_mode(layer))
        for path, layer in rewrite.iter_layers(model)
        if _quantization_mode(layer)
    ]


def check_supported(model):
    """Raises a ValueError naming the first layer that cannot be undone."""
    for path, layer, mode in quantized_layers(model):
        if mode not in _SUPPORTED_MODES:
            raise ValueError(
                f"Layer '{path}' ({type(layer).__name__}) was quantized with "
                f"Keras's `quantize({mode!r})`; keras_compress converts "
                "Keras-quantized models only in mode 'int8'. Convert the "
                "float model instead (with `mode='dynamic'` or `'int8'` "
                "for 8-bit weights), or quantize it with "
                "`model.quantize('int8')`."
            )
        untied = isinstance(
            layer, keras.layers.ReversibleEmbedding
        ) and not getattr(layer, "tie_weights", True)
        if type(layer) not in _supported_classes() or untied:
            raise ValueError(
                f"Layer '{path}' ({type(layer).__name__}) was quantized with "
                "Keras's `quantize('int8')`, but only Dense, EinsumDense, "
                "Embedding and tied ReversibleEmbedding layers can be turned "
                "back into float layers for conversion. Convert the float "
                "model instead."
            )


def dequantized_copy(model):
    """A float copy of `model` with every int8 kernel dequantized.

    Args:
        model: A built model after `model.quantize("int8")` (Sequential,
            Functional or subclassed). It is not modified.

    Returns:
        A new model of the same architecture with float layers.
    """
    check_supported(model)
    return _copy(model)


def _copy(model):
    if rewrite.is_graph_model(model):
        # One float copy per layer, also for a layer the model shares with
        # a nested one (a causal LM's tied embedding, reversed as its head).
        copies = {}

        def replace(layer):
            if isinstance(layer, keras.Model):
                return _copy(layer) if quantized_layers(layer) else None
            if rewrite.opens_up(layer):  # a custom block (KerasHub's)
                return _copy_block(layer) if quantized_layers(layer) else None
            if _quantization_mode(layer):
                if id(layer) not in copies:
                    copies[id(layer)] = _float_layer(layer)
                return copies[id(layer)]
            return None

        return rewrite.clone_and_replace(model, replace)
    return _copy_subclassed(model)


def _copy_subclassed(model):
    # `clone_model` re-creates the model from its config: the constructor
    # makes float layers, since `quantize()` ran after construction.
    clone = keras.models.clone_model(model)
    input_shape = (model.get_build_config() or {}).get("input_shape")
    if _graph.is_shape(input_shape):
        # Call rather than build: exporters refuse a subclassed model that
        # has never been called.
        batch = np.zeros((1, *input_shape[1:]), model.input_dtype)
        clone(batch, training=False)
    _assign_leaf_weights(model, clone)
    return clone


def _copy_block(layer):
    # Like a subclassed model: its config makes float sub-layers.
    clone = type(layer).from_config(layer.get_config())
    build_config = layer.get_build_config()
    if build_config and not clone.built:  # some build from their config
        clone.build_from_config(build_config)
    _assign_leaf_weights(layer, clone)
    return clone


def _assign_leaf_weights(source_model, clone):
    """Gives `clone`'s leaf layers the float weights of `source_model`'s."""
    sources = rewrite.leaf_layers(source_model)
    targets = rewrite.leaf_layers(clone)
    if not clone.built or len(sources) != len(targets):
        raise ValueError(
            f"Cannot make a float copy of the Keras-quantized "
            f"'{source_model.name}' ({type(source_model).__name__}) for "
            "conversion: its copy from `get_config()` does not rebuild the "
            "same layers (only models with one input tensor are "
            "supported). Call the model on a batch before quantizing it, "
            "and make `get_config()` return the constructor arguments."
        )
    for source, target in zip(sources, targets):
        if _quantization_mode(source):
            _assign_float_weights(source, target)
            continue
        # Its own variables only: a composite layer's sub-layers (quantized
        # or not) are leaves of their own.
        for old, new in zip(
            keras_private.own_variables(source),
            keras_private.own_variables(target),
        ):
            new.assign(old)


def _float_layer(layer):
    """A built float layer computing what the int8 `layer` approximates."""
    config = layer.get_config()
    config["dtype"] = _source_policy_name(layer)
    config.pop("quantization_config", None)
    float_layer = type(layer).from_config(config)
    float_layer.build_from_config(layer.get_build_config())
    _assign_float_weights(layer, float_layer)
    return float_layer


def _source_policy_name(layer):
    # Quantized policies are named "<mode>_from_<source policy>".
    name = layer.dtype_policy.name
    return name.split("_from_", 1)[1] if "_from_" in name else "float32"


def _assign_float_weights(source, target):
    values = {v.name: keras.ops.convert_to_numpy(v) for v in source.weights}
    if isinstance(source, keras.layers.Embedding):
        floats = {
            "embeddings": values["embeddings"].astype("float32")
            / values["embeddings_scale"][:, np.newaxis]
        }
    elif isinstance(source, keras.layers.EinsumDense):
        # The scale is stored in a transposed/squeezed layout; Keras's own
        # dequantization (used for the gradient) restores the kernel's.
        scale = keras.ops.convert_to_numpy(
            source._adjust_scale_for_dequant(values["kernel_scale"])
        )
        floats = {"kernel": values["kernel"].astype("float32") / scale}
    else:  # Dense: kernel (in, out), one scale per output unit.
        floats = {
            "kernel": values["kernel"].astype("float32")
            / values["kernel_scale"]
        }
    for variable in target.weights:
        value = floats.get(variable.name, values.get(variable.name))
        if value is None or tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Cannot dequantize layer '{source.name}' "
                f"({type(source).__name__}): no value of shape "
                f"{tuple(variable.shape)} for its float weight "
                f"'{variable.name}'. Convert the float model instead."
            )
        variable.assign(value.astype(variable.dtype))
