"""`QuantizeConfig`: which weights and outputs of a layer are quantized, how.

Every quantized layer is described by a `QuantizeConfig`. The schemes
(`schemes.py`) give one for each built-in layer they support; a custom
layer declares its own, either by defining a `get_quantize_config()`
method or by being annotated with `quantize_annotate_layer(layer,
quantize_config=...)`.

Unlike tfmot, a config never swaps attributes of the layer: the wrapper runs
the layer with `layer.stateless_call`, giving it the fake-quantized values
in place of the variables the config names. Any layer works, whatever it
does with its variables in `call()`.

Example: a custom layer with two weights

```python
class Scale(keras.layers.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 8))
        self.s = self.add_weight(shape=(8,), initializer="ones")

    def call(self, x):
        return ops.matmul(x, self.w) * self.s

    def get_quantize_config(self):
        return kc.quantization.LayerQuantizeConfig(
            weight_quantizers={"w": kc.quantization.LastValueQuantizer()},
            output_quantizer=kc.quantization.MovingAverageQuantizer())
```
"""

import keras

from keras_compress.quantization import quantizers as quantizers_lib

_PACKAGE = "keras_compress"


class QuantizeConfig:
    """How to quantize one layer (the protocol every config follows).

    Subclasses implement the two getters and `get_config()`; they are
    called on the built layer.
    """

    def get_weights_and_quantizers(self, layer):
        """Returns `[(variable, quantizer), ...]` for the weights to quantize.

        Each variable must be one of `layer.variables`.
        """
        raise NotImplementedError

    def get_output_quantizers(self, layer):
        """Returns `[quantizer]` for the layer output, or `[]` for none."""
        raise NotImplementedError

    def get_intermediate_quantizers(self, layer):
        """Returns `{name: quantizer}` for tensors inside the layer.

        Only layers with a `QuantizedComputation` of their own use them
        (`computations.py`; MultiHeadAttention: `"query"`, `"key"`,
        `"value"`, `"scores"`, `"probs"`, `"attention"`). Optional;
        defaults to none.
        """
        return {}

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerQuantizeConfig(QuantizeConfig):
    """Quantizes named weight attributes and the output of a layer.

    Args:
        weight_quantizers: A dict `{attribute name: Quantizer}`, e.g.
            `{"kernel": LastValueQuantizer(per_axis=True)}`. Each attribute
            of the layer must be a `keras.Variable` once built.
            A dotted name reaches a sub-layer's weight, e.g.
            `"query_dense.kernel"` for a MultiHeadAttention.
        output_quantizer: A `Quantizer` for the output, or None to leave
            the output as it is (for a layer whose output feeds an op that
            needs the same scale, or a pass-through layer).
        intermediate_quantizers: Optional dict `{name: Quantizer}` for
            tensors inside the layer, for layers whose computation the
            layer's `QuantizedComputation` quantizes (see
            `QuantizeConfig.get_intermediate_quantizers`).

    Example:

    ```python
    config = LayerQuantizeConfig(
        {"kernel": LastValueQuantizer(num_bits=4)},
        MovingAverageQuantizer(num_bits=8))
    layer = kc.quantization.quantize_annotate_layer(
        keras.layers.Dense(8), quantize_config=config)
    ```
    """

    def __init__(
        self,
        weight_quantizers=None,
        output_quantizer=None,
        intermediate_quantizers=None,
    ):
        weight_quantizers = dict(weight_quantizers or {})
        self.weight_quantizers = {
            str(name): quantizers_lib.deserialize(quantizer)
            for name, quantizer in weight_quantizers.items()
        }
        for name, quantizer in self.weight_quantizers.items():
            if not isinstance(quantizer, quantizers_lib.Quantizer):
                raise ValueError(
                    f"LayerQuantizeConfig: the quantizer for weight '{name}' "
                    "must be a keras_compress Quantizer; received "
                    f"{quantizer!r}."
                )
        self.output_quantizer = quantizers_lib.deserialize(output_quantizer)
        self.intermediate_quantizers = {
            str(name): quantizers_lib.deserialize(quantizer)
            for name, quantizer in dict(intermediate_quantizers or {}).items()
        }

    def get_weights_and_quantizers(self, layer):
        pairs = []
        for name, quantizer in self.weight_quantizers.items():
            variable = layer
            for part in name.split("."):
                variable = getattr(variable, part, None)
            if not isinstance(variable, keras.Variable):
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}): its "
                    f"quantize config names weight '{name}', but "
                    f"`layer.{name}` is {type(variable).__name__}, not a "
                    "keras.Variable. Name attributes that hold the layer's "
                    "variables (e.g. 'kernel'), after the layer is built."
                )
            pairs.append((variable, quantizer))
        return pairs

    def get_output_quantizers(self, layer):
        return [self.output_quantizer] if self.output_quantizer else []

    def get_intermediate_quantizers(self, layer):
        return dict(self.intermediate_quantizers)

    def get_config(self):
        config = {
            "weight_quantizers": {
                name: quantizers_lib.serialize(quantizer)
                for name, quantizer in self.weight_quantizers.items()
            },
            "output_quantizer": quantizers_lib.serialize(self.output_quantizer),
        }
        if self.intermediate_quantizers:
            config["intermediate_quantizers"] = {
                name: quantizers_lib.serialize(quantizer)
                for name, quantizer in self.intermediate_quantizers.items()
            }
        return config

    def __repr__(self):
        return (
            f"LayerQuantizeConfig(weight_quantizers="
            f"{self.weight_quantizers!r}, output_quantizer="
            f"{self.output_quantizer!r}, intermediate_quantizers="
            f"{self.intermediate_quantizers!r})"
        )


def check_quantize_config(config, where):
    """Raises a ValueError unless `config` follows the protocol."""
    missing = [
        method
        for method in (
            "get_weights_and_quantizers",
            "get_output_quantizers",
            "get_config",
        )
        if not callable(getattr(config, method, None))
    ]
    if missing:
        raise ValueError(
            f"{where}: the quantize config {config!r} lacks "
            f"{', '.join(missing)}. Subclass "
            "keras_compress.quantization.QuantizeConfig or use "
            "LayerQuantizeConfig."
        )
    return config
