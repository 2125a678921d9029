"""`CompressionWrapper`: what every technique's layer wrapper shares.

A technique (pruning, clustering, quantization) says what to compute: the
values its wrapped layer should use for some of its variables, and what to
do around the call. This base class does the rest, the same way for all of
them and on every backend:

- builds the wrapped layer from its real call arguments (some layers, like
  MultiHeadAttention, take several inputs that `build(input_shape)`
  cannot describe), and records the layer's build config in the wrapper's
  so that `.keras` files build it before restoring weights;
- runs the layer's own `call` with the technique's values in place of its
  variables, with every other variable mapped (`core.stateless`), passing
  `training` and `mask` only where the layer takes them;
- keeps the layer's dtype policy and masking behaviour;
- names the technique, so that `compression_state(layer)` can answer
  "what is applied to this layer" without importing the other techniques.
"""

import keras

from keras_compress.core import constraints as constraints_lib
from keras_compress.core import stateless


def is_wrappable(layer):
    """Whether `layer` is one plain keras layer (what wrappers take)."""
    return isinstance(layer, keras.layers.Layer) and not isinstance(
        layer, (keras.Model, CompressionWrapper)
    )


class CompressionWrapper(keras.layers.Wrapper):
    """Base class of `PruneLowMagnitude`, `ClusterWeights`, `QuantizeWrapper`.

    Subclasses set `technique` and implement `call` (usually through
    `call_layer`). They keep the variables they add in `build`.

    Args:
        layer: The layer to wrap (a layer, not a model or another wrapper).
        **kwargs: Base layer arguments (`name`, `dtype`, ...); the dtype
            policy defaults to the layer's, so that under mixed precision
            the wrapper casts inputs as the layer would.
    """

    #: The technique's name ("pruning", "clustering", "quantization").
    technique = None

    def __init__(self, layer, **kwargs):
        if not is_wrappable(layer):
            what = (
                "a model"
                if isinstance(layer, keras.Model)
                else "an already wrapped layer"
                if isinstance(layer, CompressionWrapper)
                else type(layer).__name__
            )
            raise ValueError(
                f"{type(self).__name__} wraps one keras layer; received "
                f"{what}: {layer!r}. Apply the technique to a model with "
                "its model-level function instead (prune_low_magnitude, "
                "cluster_weights, quantize_model)."
            )
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.supports_masking = layer.supports_masking

    def __call__(self, *args, **kwargs):
        if not self.layer.built:
            # Build from the real call (some layers take several inputs).
            self.layer(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    # The wrapped layer's computation.

    def call_layer(self, inputs, args, kwargs, *, training=None, values=None):
        """Runs the wrapped layer with `values` for some of its variables.

        Args:
            inputs: The first call argument.
            args: The other positional call arguments.
            kwargs: The keyword call arguments (a `mask` included).
            training: Passed on if the layer takes it.
            values: `{id(variable): tensor}`. The projected value of every
                variable with a `WeightConstraint` that the optimizer does
                not run (JAX) is added unless given.

        Returns:
            The layer's outputs.
        """
        values = dict(values or {})
        for variable in self.layer.trainable_variables:
            if id(variable) not in values:
                value = constraints_lib.forward_value(variable)
                if value is not None:
                    values[id(variable)] = value
        return stateless.call_layer(
            self.layer,
            inputs,
            args,
            kwargs,
            training=training,
            values=values,
        )

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    # Serialization: build the wrapped layer before the wrapper.

    def get_build_config(self):
        config = super().get_build_config() or {}
        layer_config = self.layer.get_build_config()
        if layer_config:
            config["layer"] = layer_config
        return config or None

    def build_from_config(self, config):
        if "layer" in config and not self.layer.built:
            self.layer.build_from_config(config["layer"])
        self.build(config.get("input_shape"))
