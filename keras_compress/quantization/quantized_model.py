"""`QuantizedModel`: QAT for subclassed models, whose graph is Python code.

A subclassed model's forward pass cannot be rewired: its `call()` uses the
layers it created in `__init__`, and loading a `.keras` file runs that
`__init__` again. This model owns a copy of the user's model and, for each
layer to quantize, a `QuantizeWrapper` around that layer; it makes the
layer's own `call` go through the wrapper (fake-quantized weights and
output), and records in its config which layers those are, so that loading
re-creates the same state before the weights are restored.

What it cannot see, it cannot quantize: math written directly in the
model's `call()` (`x + y`, `ops.concatenate`, ...) runs on float values,
which LiteRT runs between DEQUANTIZE and QUANTIZE ops; BatchNorms are not
folded (the order of layers is unknown), and a Concatenate's inputs keep
their own ranges. Write those steps as layers (`keras.layers.Add()`, ...)
to have them quantized.
"""

import keras

from keras_compress import rewrite
from keras_compress.quantization import quantize_layer as quantize_layer_lib
from keras_compress.quantization import schemes as schemes_lib
from keras_compress.quantization import wrapper as wrapper_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizedModel(rewrite.OwningModelConfig, keras.Model):
    """A model that quantizes chosen layers of an inner (subclassed) model.

    Created by `quantize_model` for subclassed models. Its input is
    fake-quantized (unless `quantize_inputs=False`), and each chosen layer of
    the inner model computes with fake-quantized weights and output.

    Args:
        model: The model to quantize (owned, not copied: pass a copy).
        quantized_layers: A list of dicts, one per quantized layer, with
            `"index"` (position in `rewrite.leaf_layers(model)`),
            `"class_name"` (checked on load), `"quantize_config"` (a
            `QuantizeConfig` or its serialized form) and
            `"preserve_sparsity"` (and optionally `"preserve_clusters"`).
        scheme: A `QuantizeScheme` or its name.
        quantize_inputs: Fake-quantize the model inputs (False when the
            model is nested in a model that already does).
        **kwargs: Base model arguments (`name`, ...).
    """

    def __init__(
        self,
        model,
        quantized_layers,
        scheme="default_8bit",
        quantize_inputs=True,
        **kwargs,
    ):
        kwargs.setdefault("name", f"quantized_{model.name}")
        super().__init__(**kwargs)
        if isinstance(scheme, dict):
            scheme = keras.saving.deserialize_keras_object(scheme)
        self.scheme = schemes_lib.get_scheme(scheme)
        self.model = model
        self.quantized_layers = []
        for entry in quantized_layers:
            entry = dict(entry)
            config = entry["quantize_config"]
            if isinstance(config, dict):
                entry["quantize_config"] = (
                    keras.saving.deserialize_keras_object(config)
                )
            self.quantized_layers.append(entry)
        self.quantize_inputs = bool(quantize_inputs)
        self.input_quantizer = None
        if self.quantize_inputs:
            self.input_quantizer = quantize_layer_lib.QuantizeLayer(
                self.scheme.input_quantizer(), name="quantize_input"
            )
        self.wrappers = []

    def build(self, input_shape):
        layers = rewrite.recorded_leaf_layers(
            self, self.model, self.quantized_layers, input_shape
        )
        if self.input_quantizer is not None:
            self.input_quantizer.build(input_shape)
        wrappers = [
            self._quantize_layer(layer, entry)
            for layer, entry in zip(layers, self.quantized_layers)
        ]
        self.wrappers = wrappers

    def _quantize_layer(self, layer, entry):
        build_config = dict(layer.get_build_config() or {})
        shapes = build_config.get("shapes_dict") or {}
        if "query_shape" in shapes:  # MultiHeadAttention: shaped like query
            build_config["input_shape"] = shapes["query_shape"]
        if "input_shape" not in build_config:
            raise ValueError(
                f"Layer '{layer.name}' of '{self.model.name}' was never "
                "called, so its input shape is unknown; it cannot be "
                "quantized."
            )
        wrapper = wrapper_lib.QuantizeWrapper(
            layer,
            quantize_config=entry["quantize_config"],
            preserve_sparsity=entry.get("preserve_sparsity", False),
            preserve_clusters=entry.get("preserve_clusters", False),
            scheme=self.scheme,
        )
        wrapper.build(build_config["input_shape"])
        if not hasattr(layer, wrapper_lib.ORIGINAL_CALL):
            object.__setattr__(layer, wrapper_lib.ORIGINAL_CALL, layer.call)
        object.__setattr__(layer, "call", rewrite.CallThroughWrapper(wrapper))
        return wrapper

    def call(self, inputs, training=None):
        if self.input_quantizer is not None:
            inputs = self.input_quantizer(inputs, training=training)
        return self.model(inputs, training=training)

    def get_config(self):
        entries = []
        for entry in self.quantized_layers:
            entry = dict(entry)
            entry["quantize_config"] = keras.saving.serialize_keras_object(
                entry["quantize_config"]
            )
            entries.append(entry)
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "quantized_layers": entries,
            "scheme": keras.saving.serialize_keras_object(self.scheme),
            "quantize_inputs": self.quantize_inputs,
        }
