"""Choosing what to quantize: `quantize_annotate_layer` and `quantize_apply`.

Annotating marks a layer, in a model you build, to be quantized (optionally
with its own `QuantizeConfig`); `quantize_apply(model)` then quantizes only
the annotated layers. `quantize_model(model)` quantizes every layer the
scheme supports, so annotation is for partial quantization and for custom
layers.

Example:

```python
inputs = keras.Input((16,))
x = kc.quantization.quantize_annotate_layer(keras.layers.Dense(8))(inputs)
x = keras.layers.LayerNormalization()(x)          # stays float
outputs = kc.quantization.quantize_annotate_layer(
    MyLayer(), quantize_config=MyQuantizeConfig())(x)
qat = kc.quantization.quantize_apply(keras.Model(inputs, outputs))
```
"""

import keras

from keras_compress.quantization import computations as computations_lib
from keras_compress.quantization import quantize_config as config_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeAnnotate(keras.layers.Wrapper):
    """Marks a layer for `quantize_apply`; computes exactly like the layer.

    Args:
        layer: The layer to quantize.
        quantize_config: Optional `QuantizeConfig`; required for a custom
            layer without a `get_quantize_config()` method.
        **kwargs: Base layer arguments.
    """

    def __init__(self, layer, quantize_config=None, **kwargs):
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(
                quantize_config
            )
        if quantize_config is not None:
            config_lib.check_quantize_config(
                quantize_config, f"quantize_annotate_layer('{layer.name}')"
            )
        kwargs.setdefault("name", f"quantize_annotate_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_config = quantize_config
        self.supports_masking = layer.supports_masking

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return computations_lib.computation_for(self.layer).output_shape(
            self.layer, input_shape
        )

    def get_config(self):
        config = super().get_config()
        config["quantize_config"] = (
            keras.saving.serialize_keras_object(self.quantize_config)
            if self.quantize_config is not None
            else None
        )
        return config


def quantize_annotate_layer(to_annotate, quantize_config=None):
    """Marks a layer to be quantized by `quantize_apply`.

    Args:
        to_annotate: A `keras.layers.Layer` (not yet in a model, or used
            to build a new one).
        quantize_config: Optional `QuantizeConfig` for this layer.

    Returns:
        A `QuantizeAnnotate` layer that computes like `to_annotate`.
    """
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(
        to_annotate, keras.Model
    ):
        raise ValueError(
            "quantize_annotate_layer() takes a keras.layers.Layer (not a "
            f"model); received {type(to_annotate).__name__}. To quantize "
            "a whole model use quantize_model()."
        )
    if isinstance(to_annotate, QuantizeAnnotate):
        raise ValueError(f"Layer '{to_annotate.name}' is already annotated.")
    return QuantizeAnnotate(to_annotate, quantize_config=quantize_config)
