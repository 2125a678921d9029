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
which LiteRT runs between DEQUANTIZE and QUANTIZE ops, and a
Concatenate's inputs keep their own ranges. Write those steps as layers
(`keras.layers.Add()`, ...) to have them quantized. A BatchNormalization
called right after a quantized Dense/convolution is folded into it, as in
graph models (an entry's `"batch_norm_index"`), when running the model
shows that nothing else reads the layer's raw output.
"""

import keras

from keras_compress import core
from keras_compress import rewrite
from keras_compress.core import stateless
from keras_compress.quantization import quantize_layer as quantize_layer_lib
from keras_compress.quantization import schemes as schemes_lib
from keras_compress.quantization import wrapper as wrapper_lib

_PACKAGE = "keras_compress"


class _FoldedAway:
    """What a folded BatchNorm's call is routed to: its input unchanged
    (the wrapper of the layer before it applies it)."""

    @staticmethod
    def call(inputs, *args, **kwargs):
        return inputs


_FOLDED_AWAY = _FoldedAway()


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizedModel(core.OwningModel):
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

    entries_key = "quantized_layers"

    def __init__(
        self,
        model,
        quantized_layers,
        scheme="default_8bit",
        quantize_inputs=True,
        **kwargs,
    ):
        kwargs.setdefault("name", f"quantized_{model.name}")
        entries = []
        for entry in quantized_layers:
            entry = dict(entry)
            config = entry["quantize_config"]
            if isinstance(config, dict):
                entry["quantize_config"] = (
                    keras.saving.deserialize_keras_object(config)
                )
            entries.append(entry)
        super().__init__(model, entries, **kwargs)
        if isinstance(scheme, dict):
            scheme = keras.saving.deserialize_keras_object(scheme)
        self.scheme = schemes_lib.get_scheme(scheme)
        self.quantize_inputs = bool(quantize_inputs)
        self.input_quantizer = None
        if self.quantize_inputs:
            self.input_quantizer = quantize_layer_lib.QuantizeLayer(
                self.scheme.input_quantizer(), name="quantize_input"
            )

    @property
    def quantized_layers(self):
        return self.entries

    def build_inputs(self, input_shape):
        if self.input_quantizer is not None:
            self.input_quantizer.build(input_shape)

    def attach(self, layer, entry, input_shape):
        batch_norm = None
        if entry.get("batch_norm_index") is not None:
            # Folded into the wrapper; its own call passes values through.
            batch_norm = rewrite.leaf_layers(self.model)[
                entry["batch_norm_index"]
            ]
            stateless.route_call(batch_norm, _FOLDED_AWAY)
        wrapper = wrapper_lib.QuantizeWrapper(
            layer,
            quantize_config=entry["quantize_config"],
            batch_norm=batch_norm,
            preserve_sparsity=entry.get("preserve_sparsity", False),
            preserve_clusters=entry.get("preserve_clusters", False),
            scheme=self.scheme,
        )
        wrapper.build(input_shape)
        return wrapper

    def call(self, inputs, *args, training=None, **kwargs):
        if self.input_quantizer is not None:
            inputs = self.input_quantizer(inputs, training=training)
        return self.model(inputs, *args, training=training, **kwargs)

    def serialized_entries(self):
        entries = []
        for entry in self.entries:
            entry = dict(entry)
            entry["quantize_config"] = keras.saving.serialize_keras_object(
                entry["quantize_config"]
            )
            entries.append(entry)
        return entries

    def get_config(self):
        return {
            **super().get_config(),
            "scheme": keras.saving.serialize_keras_object(self.scheme),
            "quantize_inputs": self.quantize_inputs,
        }
