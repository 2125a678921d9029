"""Quantization schemes: what each built-in layer type becomes.

A scheme sorts every layer into one of three groups:

- **quantized** (`get_quantize_config` returns a config): its weights and/or
  output are fake-quantized by a `QuantizeWrapper`;
- **pass-through** (`is_pass_through`): the layer moves or selects values
  without computing new ones (pooling by max, reshape, padding, dropout,
  ...). LiteRT runs it on int8 with the scale of its input, so it needs no
  quantizer of its own;
- anything else stays float (with a warning from `quantize_model`).

Choices made for LiteRT's integer kernels (checked on the converted file by
the tests): per-channel symmetric weights for convolutions and per-tensor
for Dense and EinsumDense (a per-channel Dense or EinsumDense kernel makes
the converter fail: "'tfl.transpose' op has mismatched quantized axes")
and for Conv2DTranspose (per-channel on its output axis fails in the
converter too); per-tensor asymmetric activations; fixed ranges for
sigmoid, softmax and tanh outputs, which LiteRT's kernels produce with a
fixed scale.

Transformer blocks: MultiHeadAttention gets per-tensor weights on its four
projections and a range after each projection, the attention scores, the
softmax (fixed) and the weighted sum, so that the file runs int8
FULLY_CONNECTED, BATCH_MATMUL and SOFTMAX ops; LayerNormalization gets a
range after each of its steps (MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL,
ADD), all of which LiteRT runs on int8. A gated MultiHeadAttention and a
LayerNormalization with the deprecated `rms_scaling=True` stay float.

A BatchNormalization is folded into the Dense or convolution before it
where there is one (`quantize_api`); one after an Add, a pooling or a
Concatenate (pre-activation networks) runs as an int8 MUL and ADD, as do
Normalization and Rescaling layers.
"""

import keras
from keras import layers as L
from keras import ops

from keras_compress.core import keras_private
from keras_compress.quantization import quantize_config as config_lib
from keras_compress.quantization import quantizers as quantizers_lib

_PACKAGE = "keras_compress"

# Output ranges of LiteRT's int8 kernels with a fixed output scale.
FIXED_OUTPUT_RANGES = {
    "sigmoid": (0.0, 255.0 / 256.0),
    "softmax": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}
# Activations that LiteRT fuses into the op before them: no quantizer
# between the op and the activation.
FUSABLE_ACTIVATIONS = ("linear", "relu", "relu6")
# Activations LiteRT runs on int8 when their input and output have ranges
# (checked on converted files). Others (e.g. elu) stay float in the file.
INTEGER_ACTIVATIONS = FUSABLE_ACTIVATIONS + (
    "sigmoid",
    "softmax",
    "tanh",
    "gelu",
    "silu",
    "swish",
    "hard_silu",
    "hard_swish",
    "leaky_relu",
)

_PASS_THROUGH = (
    L.InputLayer,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.Reshape,
    L.Flatten,
    L.Permute,
    L.RepeatVector,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.Cropping1D,
    L.Cropping2D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
)
# Layers without weights whose output is a new range.
_OUTPUT_ONLY = (
    # Average pooling rounds its mean to the grid of its input, whose range
    # the wrapper reuses (see wrapper._shared_input_range).
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.Add,
    L.Subtract,
    L.Multiply,
    L.Average,
    L.Maximum,
    L.Minimum,
    L.Concatenate,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.ReLU,
    L.LeakyReLU,
    L.Softmax,
    L.Activation,
)


# Standard activations that libraries register under their own name.
_ACTIVATION_ALIASES = {
    # KerasHub's BERT/GPT-2 FFN: `keras.activations.gelu(approximate=True)`,
    # which LiteRT runs as GELU (approximate) on int8 as well.
    "keras_hub>gelu_approximate": "gelu",
}


def activation_name(activation):
    """The registered name of an activation function (or None)."""
    if activation is None:
        return None
    if isinstance(activation, str):
        return activation
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return getattr(activation, "__name__", None)
    if isinstance(name, dict):
        name = name.get("config")
    return _ACTIVATION_ALIASES.get(name, name)


def relu_layer_activation(layer):
    """'relu' or 'relu6' if `layer` is a plain ReLU/ReLU6 layer, else None.

    Such a layer can be fused into the Dense/convolution before it.
    """
    if isinstance(layer, L.ReLU):
        if layer.negative_slope or layer.threshold:
            return None
        if layer.max_value is None:
            return "relu"
        if float(layer.max_value) == 6.0:
            return "relu6"
        return None
    if isinstance(layer, L.Activation):
        name = activation_name(layer.activation)
        return name if name in ("relu", "relu6") else None
    return None


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeScheme:
    """How built-in layers are quantized.

    Args:
        weight_bits: Bits of weights, 2 to 8 (LiteRT stores 8; fewer
            bits train the model for a coarser grid).
        activation_bits: Bits of activations, 2 to 8.
        ema_decay: Decay of the activation observers.
        name: The scheme's name.

    Example:

    ```python
    scheme = QuantizeScheme(weight_bits=4, activation_bits=8)
    qat = kc.quantization.quantize_model(model, scheme=scheme)
    ```
    """

    def __init__(
        self, weight_bits=8, activation_bits=8, ema_decay=0.999, name=None
    ):
        self.weight_bits = quantizers_lib.check_num_bits(
            weight_bits, "weight_bits"
        )
        self.activation_bits = quantizers_lib.check_num_bits(
            activation_bits, "activation_bits"
        )
        self.ema_decay = float(ema_decay)
        self.name = name or f"w{weight_bits}a{activation_bits}"

    # Quantizers.

    def weight_quantizer(self, per_axis=False, axis=-1):
        """A symmetric, narrow-range weight quantizer."""
        return quantizers_lib.LastValueQuantizer(
            num_bits=self.weight_bits, per_axis=per_axis, axis=axis
        )

    def activation_quantizer(self):
        """A moving-average min/max quantizer for activations."""
        return quantizers_lib.MovingAverageQuantizer(
            num_bits=self.activation_bits, ema_decay=self.ema_decay
        )

    def output_quantizer_for(self, activation):
        """The quantizer for an output after `activation` (a name)."""
        if activation in FIXED_OUTPUT_RANGES and self.activation_bits == 8:
            low, high = FIXED_OUTPUT_RANGES[activation]
            return quantizers_lib.FixedRangeQuantizer(low, high)
        return self.activation_quantizer()

    def input_quantizer(self):
        """The quantizer of a float tensor entering quantized layers."""
        return self.activation_quantizer()

    # Layer groups.

    def is_pass_through(self, layer):
        """True if `layer` runs on integers with its input's scale."""
        if isinstance(layer, L.Activation):
            return activation_name(layer.activation) == "linear"
        return isinstance(layer, _PASS_THROUGH) or isinstance(
            layer, keras_private.APPLICATIONS_STOCHASTIC_DEPTH
        )

    def get_quantize_config(self, layer):
        """A `QuantizeConfig` for `layer`, or None if not supported.

        Args:
            layer: A built-in Keras layer (custom layers declare their own
                config, see `QuantizeConfig`).

        Returns:
            A `LayerQuantizeConfig` or None.
        """
        if isinstance(layer, L.MultiHeadAttention):
            return self._attention_config(layer)
        if isinstance(layer, L.Embedding):
            return self._embedding_config(layer)
        if isinstance(layer, L.LayerNormalization):
            return self._layer_norm_config(layer)
        if isinstance(layer, (L.BatchNormalization, L.Normalization)):
            return self._affine_config()
        if isinstance(layer, L.Rescaling) and (
            len(ops.shape(layer.scale)) == 0
            or keras.config.image_data_format() == "channels_last"
        ):
            return self._affine_config()
        if isinstance(layer, keras_private.APPLICATIONS_LAYER_SCALE):
            # ConvNeXt's `x * gamma`: an int8 MUL by a constant.
            return config_lib.LayerQuantizeConfig(
                {"gamma": quantizers_lib.LastValueQuantizer(8)},
                self.activation_quantizer(),
            )
        weights = self._weight_quantizers(layer)
        if weights is not None:
            return config_lib.LayerQuantizeConfig(
                weights, self.activation_quantizer()
            )
        if isinstance(layer, _OUTPUT_ONLY) and not self.is_pass_through(layer):
            activation = None
            if isinstance(layer, L.Activation):
                activation = activation_name(layer.activation)
                if activation not in INTEGER_ACTIVATIONS:
                    return None
            if isinstance(layer, L.ReLU) and (
                layer.threshold or layer.max_value not in (None, 6.0)
            ):
                return None  # LiteRT has no int8 kernel for it
            elif isinstance(layer, L.Softmax):
                activation = "softmax"
            return config_lib.LayerQuantizeConfig(
                {}, self.output_quantizer_for(activation)
            )
        return None

    def _weight_quantizers(self, layer):
        # Order matters: SeparableConv2D and DepthwiseConv2D are Conv
        # subclasses in Keras.
        if isinstance(layer, L.SeparableConv2D):
            return {
                "depthwise_kernel": self.weight_quantizer(True, (-2, -1)),
                "pointwise_kernel": self.weight_quantizer(True, -1),
            }
        if isinstance(layer, L.DepthwiseConv2D):
            # Kernel (h, w, in, multiplier): LiteRT's channel is
            # in * multiplier, the product of the two last axes.
            return {"kernel": self.weight_quantizer(True, (-2, -1))}
        if isinstance(layer, L.Conv2DTranspose):
            return {"kernel": self.weight_quantizer(False)}
        if isinstance(layer, (L.Conv1D, L.Conv2D)) and not isinstance(
            layer, (L.Conv1DTranspose, L.SeparableConv1D)
        ):
            return {"kernel": self.weight_quantizer(True, -1)}
        if isinstance(layer, (L.Dense, L.EinsumDense)):
            # EinsumDense lowers to FULLY_CONNECTED (or BATCH_MATMUL) with
            # a reshaped kernel: per-tensor, as for Dense.
            return {"kernel": self.weight_quantizer(False)}
        return None

    def _attention_config(self, layer):
        """MultiHeadAttention: every projection and product on int8.

        LiteRT runs the projections as int8 FULLY_CONNECTED, the two
        products as int8 BATCH_MATMUL and the softmax as int8 SOFTMAX
        (fixed output range), when each of their outputs has a range.
        """
        if getattr(layer, "_use_gate", False):
            return None  # a gated attention: its GATE product is not handled
        weights = {
            f"{name}_dense.kernel": self.weight_quantizer(False)
            for name in ("query", "key", "value", "output")
        }
        intermediates = {
            name: self.activation_quantizer()
            for name in ("query", "key", "value", "scores", "attention")
        }
        intermediates["probs"] = self.output_quantizer_for("softmax")
        return config_lib.LayerQuantizeConfig(
            weights, self.activation_quantizer(), intermediates
        )

    def _embedding_config(self, layer):
        """Embedding as an int8 GATHER; a ReversibleEmbedding called with
        `reverse=True` (a language model's tied head) as an int8
        FULLY_CONNECTED by the same table.

        The table is quantized per tensor to 8 bits whatever `weight_bits`
        is (LiteRT's GATHER copies int8 rows, and its output keeps the
        table's scale: no output quantizer). The reversed call's logits
        get their own range.
        """
        if getattr(layer, "logit_soft_cap", None):
            return None  # a tanh cap on the logits: not simulated
        weights = {"embeddings": quantizers_lib.LastValueQuantizer(8)}
        intermediates = {}
        if isinstance(layer, L.ReversibleEmbedding):
            if not layer.tie_weights:
                weights["reverse_embeddings"] = (
                    quantizers_lib.LastValueQuantizer(8)
                )
            intermediates["logits"] = self.activation_quantizer()
        return config_lib.LayerQuantizeConfig(weights, None, intermediates)

    def _layer_norm_config(self, layer):
        """LayerNormalization as int8 MEAN, SUB, MUL, ADD and RSQRT ops.

        Each intermediate tensor gets its own range, so the converter keeps
        every op on int8. Gamma and beta are quantized to 8 bits whatever
        `weight_bits` is (LiteRT quantizes them as int8 MUL/ADD operands).
        """
        if layer.rms_scaling:
            return None  # deprecated in Keras; not computed step by step
        weights = {}
        if layer.scale:
            weights["gamma"] = quantizers_lib.LastValueQuantizer(8)
        if layer.center:
            weights["beta"] = quantizers_lib.LastValueQuantizer(8)
        names = ["mean", "centered", "squared", "variance", "variance_eps"]
        names.append("inv_std")
        if layer.scale or layer.center:
            names.append("normalized")
        if "gamma" in weights and "beta" in weights:
            names.append("scaled")
        intermediates = {name: self.activation_quantizer() for name in names}
        return config_lib.LayerQuantizeConfig(
            weights, self.activation_quantizer(), intermediates
        )

    def _affine_config(self):
        """A BatchNormalization no kernel precedes, or a Normalization,
        as an int8 MUL and ADD.

        In inference both are `x * multiplier + offset`, which the
        converter writes as a MUL and an ADD by per-channel constants.
        Pre-activation networks (ResNetV2, DenseNet) put BatchNorms after
        an Add, a pooling or a Concatenate, where they cannot be folded
        (the planner folds every other one); ConvNeXt normalizes its input
        with a Normalization layer, MobileNetV3 and EfficientNetV2 scale
        theirs with a Rescaling layer. Both constants are quantized to 8 bits,
        as LiteRT stores them, and the product gets a range.
        """
        return config_lib.LayerQuantizeConfig(
            {},
            self.activation_quantizer(),
            {
                "multiplier": quantizers_lib.LastValueQuantizer(8),
                "offset": quantizers_lib.LastValueQuantizer(8),
                "scaled": self.activation_quantizer(),
            },
        )

    def get_config(self):
        return {
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "ema_decay": self.ema_decay,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (
            f"QuantizeScheme(name={self.name!r}, weight_bits="
            f"{self.weight_bits}, activation_bits={self.activation_bits})"
        )


SCHEMES = {
    "default_8bit": lambda: QuantizeScheme(8, 8, name="default_8bit"),
    # 4-bit weights reach the file packed as int4 (two per byte) with int8
    # activations: tested on CNNs, a MobileNet-style model and attention.
    "4bit_weights": lambda: QuantizeScheme(4, 8, name="4bit_weights"),
}
# Earlier names, still accepted: tfmot's, and this project's before the
# 4-bit file was tested.
SCHEME_ALIASES = {"experimental_4bit_weights": "4bit_weights"}


def get_scheme(scheme):
    """A `QuantizeScheme` from a name (see `SCHEMES`) or an instance."""
    if isinstance(scheme, QuantizeScheme):
        return scheme
    if isinstance(scheme, str):
        scheme = SCHEME_ALIASES.get(scheme, scheme)
    if isinstance(scheme, str) and scheme in SCHEMES:
        return SCHEMES[scheme]()
    raise ValueError(
        f"Unknown quantization `scheme`={scheme!r}. Use one of "
        f"{sorted(SCHEMES)} or a keras_compress.quantization.QuantizeScheme."
    )
