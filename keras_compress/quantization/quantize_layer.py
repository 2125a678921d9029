"""`QuantizeLayer`: fake-quantizes a float tensor entering quantized layers.

`quantize_model` puts one after each model input (and after any layer left
in float that feeds a quantized one). In the converted file it becomes the
QUANTIZE op that turns the float input into int8.
"""

import keras

from keras_compress.quantization import quantizers as quantizers_lib

_PACKAGE = "keras_compress"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeLayer(keras.layers.Layer):
    """Fake-quantizes its input with a moving-average range observer.

    Args:
        quantizer: A `Quantizer`; defaults to an 8-bit
            `MovingAverageQuantizer`.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    ```python
    inputs = keras.Input((28, 28, 1))
    x = kc.quantization.QuantizeLayer()(inputs)
    ```
    """

    def __init__(self, quantizer=None, **kwargs):
        super().__init__(**kwargs)
        if quantizer is None:
            quantizer = quantizers_lib.MovingAverageQuantizer()
        self.quantizer = quantizers_lib.deserialize(quantizer)
        if not isinstance(self.quantizer, quantizers_lib.Quantizer):
            raise ValueError(
                "QuantizeLayer needs a keras_compress Quantizer; received "
                f"quantizer={quantizer!r}."
            )
        self.supports_masking = True
        self._state = {}

    def build(self, input_shape):
        self._state = self.quantizer.build(input_shape, "input", self)

    def call(self, inputs, training=None):
        return self.quantizer(inputs, bool(training), self._state)

    def compute_output_shape(self, input_shape):
        return input_shape

    def observer_variables(self):
        """`[(name, min_variable, max_variable)]` of the moving range."""
        if "min" not in self._state:
            return []
        return [(self.name, self._state["min"], self._state["max"])]

    def get_config(self):
        config = super().get_config()
        config["quantizer"] = quantizers_lib.serialize(self.quantizer)
        return config
