"""Fake quantizers: how a weight or an activation is rounded during QAT.

A quantizer rounds a float tensor to the grid of an integer type and back
(`keras.quantizers.fake_quant_with_min_max_vars`), so that training sees the
error the integer model will make. On the TensorFlow backend that function
lowers to `tf.quantization.fake_quant_*` ops, which the LiteRT converter
turns into integer kernels with exactly these ranges: the converted file
computes what the Keras model computes.

- `LastValueQuantizer`: weights. The range is taken from the current values
  of the weight at every call (nothing to store, never stale). Symmetric and
  narrow range by default, as LiteRT's int8 kernels require (zero point 0,
  values in [-127, 127]).
- `MovingAverageQuantizer`: activations. Moving-average min/max observers,
  updated in training and frozen at inference.
- `FixedRangeQuantizer`: a range known in advance (sigmoid, softmax, tanh
  outputs), chosen to match the fixed output scale of LiteRT's kernels.

A quantizer is a small, serializable description; the variables it needs
are created on the layer that uses it (`build`) and handed back to it on
each call, so one quantizer object can serve several tensors.
"""

import math

import keras
from keras import ops

_PACKAGE = "keras_compress"

MIN_BITS = 2
MAX_BITS = 8

# Smallest range a weight quantizer uses. An all-zero channel (pruned) would
# otherwise have a zero scale; a tiny scale would overflow the int32 bias
# that LiteRT computes as bias / (input_scale * weight_scale).
_MIN_WEIGHT_RANGE = 1e-4
# Smallest width of an activation range, for the same reason.
_MIN_ACTIVATION_RANGE = 1e-4


def check_num_bits(num_bits, argument="num_bits"):
    """Raises a ValueError unless `num_bits` is an integer in 2..8."""
    if (
        isinstance(num_bits, bool)
        or not isinstance(num_bits, int)
        or not MIN_BITS <= num_bits <= MAX_BITS
    ):
        raise ValueError(
            f"`{argument}` must be an integer from {MIN_BITS} to {MAX_BITS} "
            f"(LiteRT stores quantized values in 8 bits); received "
            f"{argument}={num_bits!r}."
        )
    return num_bits


class Quantizer:
    """Base class of fake quantizers.

    Subclasses implement `__call__` and, if they keep state, `build`.
    """

    def build(self, tensor_shape, name, layer):
        """Creates the variables this quantizer needs on `layer`.

        Args:
            tensor_shape: Shape of the tensor that will be quantized.
            name: A name prefix for the variables (unique in the layer).
            layer: The `keras.layers.Layer` that owns the variables.

        Returns:
            A dict of variables, passed back as `weights` to `__call__`.
        """
        return {}

    def __call__(self, inputs, training=False, weights=None):
        """Fake-quantizes `inputs`.

        Args:
            inputs: A float tensor.
            training: Python bool; observers update their ranges only
                when True.
            weights: The dict returned by `build`.

        Returns:
            A tensor of the dtype of `inputs`, on the quantization grid.
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config()))))

    def __repr__(self):
        arguments = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items()
        )
        return f"{type(self).__name__}({arguments})"


def _fake_quant(
    inputs, min_value, max_value, num_bits, narrow_range, axis=None
):
    return keras.quantizers.fake_quant_with_min_max_vars(
        inputs,
        min_value,
        max_value,
        num_bits=num_bits,
        narrow_range=narrow_range,
        axis=axis,
    )


def _normalize_axes(axis, rank):
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    axes = sorted(a % rank for a in axes)
    if len(axes) > 1 and axes != list(range(rank - len(axes), rank)):
        raise ValueError(
            f"A per-channel `axis` with several entries must name the last "
            f"axes of the weight (e.g. (-2, -1)); received axis={axis!r} for "
            f"a weight of rank {rank}."
        )
    return axes


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LastValueQuantizer(Quantizer):
    """Fake-quantizes weights with the range of their current values.

    Args:
        num_bits: Bits of the integer grid, 2 to 8.
        per_axis: Quantize each channel with its own scale (per-channel
            quantization) instead of one scale for the whole tensor.
        axis: The channel axis for `per_axis`. A tuple of trailing axes
            (e.g. `(-2, -1)` for a depthwise kernel `(h, w, in, multiplier)`)
            treats their product as the channel axis.
        symmetric: Use the range `[-max|w|, max|w|]` (zero point 0, as
            LiteRT's integer kernels require) instead of `[min, max]`.
        narrow_range: Drop the lowest integer (e.g. use [-127, 127] for
            8 bits), also required by LiteRT for weights.

    Example:

    ```python
    quantizer = LastValueQuantizer(num_bits=8, per_axis=True, axis=-1)
    kernel_q = quantizer(conv.kernel, training=True)
    ```
    """

    def __init__(
        self,
        num_bits=8,
        per_axis=False,
        axis=-1,
        symmetric=True,
        narrow_range=True,
    ):
        self.num_bits = check_num_bits(num_bits)
        self.per_axis = bool(per_axis)
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        self.symmetric = bool(symmetric)
        self.narrow_range = bool(narrow_range)

    def __call__(self, inputs, training=False, weights=None):
        inputs = ops.convert_to_tensor(inputs)
        if not hasattr(inputs, "ndim"):  # a backend variable, e.g. `.value`
            inputs = ops.copy(inputs)
        x = ops.cast(inputs, "float32")
        shape = tuple(x.shape)
        x, channel_axis, reduce_axes = self._channel_view(x)
        low, high = self._range(x, axis=reduce_axes)
        outputs = _fake_quant(
            x, low, high, self.num_bits, self.narrow_range, axis=channel_axis
        )
        return ops.cast(ops.reshape(outputs, shape), inputs.dtype)

    def _channel_view(self, x):
        """`(x, channel axis, axes to reduce)`: per tensor `(x, None,
        None)`; per channel, trailing channel axes merged into one (the
        converter sees a per-channel range along the last axis)."""
        if not self.per_axis:
            return x, None, None
        shape = tuple(x.shape)
        axes = _normalize_axes(self.axis, len(shape))
        if len(axes) > 1:
            x = ops.reshape(
                x, shape[: axes[0]] + (math.prod(shape[axes[0] :]),)
            )
            axes = [len(x.shape) - 1]
        reduce_axes = tuple(i for i in range(len(x.shape)) if i != axes[0])
        return x, axes[0], reduce_axes

    def quantize_like(self, inputs, weight):
        """`inputs` on the grid this per-tensor quantizer puts `weight` on.

        For values taken from the quantized weight (an Embedding's looked
        up rows): numerically the identity, and it tells the converter the
        tensor keeps the weight's scale, as LiteRT's int8 GATHER does.
        """
        low, high = self._range(ops.cast(weight, "float32"), axis=None)
        return ops.cast(
            _fake_quant(
                ops.cast(inputs, "float32"),
                low,
                high,
                self.num_bits,
                self.narrow_range,
            ),
            inputs.dtype,
        )

    def weight_step(self, weight):
        """The grid step `__call__` puts `weight` on: a scalar, or one per
        channel (along `axis`, trailing axes merged) when `per_axis`."""
        x, _, reduce_axes = self._channel_view(ops.cast(weight, "float32"))
        low, high = self._range(x, axis=reduce_axes)
        return _grid_step(low, high, self.num_bits, self.narrow_range)

    def _range(self, x, axis):
        # The range follows the weight: no gradient flows through it.
        x = ops.stop_gradient(x)
        if self.symmetric:
            high = ops.maximum(
                ops.max(ops.abs(x), axis=axis), _MIN_WEIGHT_RANGE
            )
            return -high, high
        low = ops.minimum(ops.min(x, axis=axis), 0.0)
        high = ops.maximum(ops.max(x, axis=axis), 0.0)
        return low, ops.maximum(high, low + _MIN_WEIGHT_RANGE)

    def get_config(self):
        return {
            "num_bits": self.num_bits,
            "per_axis": self.per_axis,
            "axis": list(self.axis)
            if isinstance(self.axis, tuple)
            else self.axis,
            "symmetric": self.symmetric,
            "narrow_range": self.narrow_range,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MovingAverageQuantizer(Quantizer):
    """Fake-quantizes activations with moving-average min/max observers.

    In training (`training=True`) the observed range moves towards the min
    and max of each batch: `range = decay * range + (1 - decay) * batch`,
    starting from the first batch's range. At inference the range is frozen.
    The range always contains 0, so that zero (padding, ReLU) is exact.

    Under `tf.distribute` the observers are averaged over the replicas.

    Args:
        num_bits: Bits of the integer grid, 2 to 8.
        ema_decay: Decay of the moving average, in [0, 1).
        symmetric: Use `[-m, m]` instead of `[min, max]`.
        narrow_range: Drop the lowest integer of the grid.

    Example:

    ```python
    quantizer = MovingAverageQuantizer(num_bits=8)
    variables = quantizer.build((None, 16), "output", layer)
    y = quantizer(x, training=True, weights=variables)
    ```
    """

    def __init__(
        self, num_bits=8, ema_decay=0.999, symmetric=False, narrow_range=False
    ):
        self.num_bits = check_num_bits(num_bits)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(
                "`ema_decay` must be in [0, 1); received "
                f"ema_decay={ema_decay!r}."
            )
        self.ema_decay = float(ema_decay)
        self.symmetric = bool(symmetric)
        self.narrow_range = bool(narrow_range)

    def build(self, tensor_shape, name, layer):
        def observer(suffix):
            # Both start at 0, which marks "never observed": the first
            # training batch then sets the range directly.
            return layer.add_weight(
                name=f"{name}_{suffix}",
                shape=(),
                dtype="float32",
                initializer="zeros",
                trainable=False,
                autocast=False,
                aggregation="mean",
            )

        return {"min": observer("min"), "max": observer("max")}

    def __call__(self, inputs, training=False, weights=None):
        if weights is None or "min" not in weights:
            raise ValueError(
                "MovingAverageQuantizer needs the variables created by its "
                "build() method; pass them as `weights`."
            )
        min_var, max_var = weights["min"], weights["max"]
        if training:
            x = ops.stop_gradient(ops.cast(inputs, "float32"))
            batch_min = ops.min(x)
            batch_max = ops.max(x)
            observed = ops.greater(max_var, min_var)
            decay = self.ema_decay
            low = ops.where(
                observed,
                decay * min_var + (1.0 - decay) * batch_min,
                batch_min,
            )
            high = ops.where(
                observed,
                decay * max_var + (1.0 - decay) * batch_max,
                batch_max,
            )
            min_var.assign(low)
            max_var.assign(high)
        else:
            low, high = min_var, max_var
        low, high = _include_zero(low, high, self.symmetric)
        return _fake_quant(inputs, low, high, self.num_bits, self.narrow_range)

    def step(self, weights):
        """The grid step of the tensor this quantizer rounds, from its
        variables' current range."""
        low, high = _include_zero(
            weights["min"], weights["max"], self.symmetric
        )
        return _grid_step(low, high, self.num_bits, self.narrow_range)

    def get_config(self):
        return {
            "num_bits": self.num_bits,
            "ema_decay": self.ema_decay,
            "symmetric": self.symmetric,
            "narrow_range": self.narrow_range,
        }


def round_ties_as_litert_mean(means, quantizer, weights):
    """Shifts `means` so that `quantizer` rounds their ties as LiteRT does.

    LiteRT's integer average pooling rounds the mean of its int8 inputs
    half away from zero, e.g. -124.5 to -125; fake quantization rounds half
    up, to -124. A mean of `n` values of a grid lies a multiple of `1/n`
    steps from it, so moving the means below the int8 zero by 1/1024 of a
    step changes the rounding of their ties only (for `n` < 512).

    Args:
        means: Means of values on the grid of `quantizer`.
        quantizer: The `MovingAverageQuantizer` that quantizes `means`
            next, with the range of the values averaged.
        weights: Its variables (`"min"` and `"max"`).

    Returns:
        `means`, shifted where their int8 value is negative.
    """
    low, high = _include_zero(
        weights["min"], weights["max"], quantizer.symmetric
    )
    quant_min = 1 if quantizer.narrow_range else 0
    quant_max = 2**quantizer.num_bits - 1
    scale = ops.maximum(high - low, 1e-12) / (quant_max - quant_min)
    zero_point = ops.clip(
        ops.round(quant_min - low / scale), quant_min, quant_max
    )
    int_zero = (2 ** (quantizer.num_bits - 1) - zero_point) * scale
    means = ops.cast(means, "float32")
    return ops.where(means < int_zero, means - scale / 1024.0, means)


def _grid_step(low, high, num_bits, narrow_range):
    """The step of the `num_bits` grid over `[low, high]`, as TensorFlow's
    fake quantization (and then LiteRT) computes it."""
    levels = 2**num_bits - (2 if narrow_range else 1)
    return (ops.cast(high, "float32") - ops.cast(low, "float32")) / levels


def quantize_bias(bias, input_step, weight_step):
    """`bias` on the int32 grid LiteRT stores it on.

    A FULLY_CONNECTED or convolution with int8 inputs adds its bias in
    int32, in steps of `input step × weight step` (per output channel with
    per-channel weights). That grid is as coarse as the weights' is: with
    4-bit weights, rounding a trained bias onto it moved the logits of an
    attention block by a step for 2.5 % of them (measured) where QAT did
    not see it. The gradient passes straight through the rounding.

    Args:
        bias: The bias, shaped as the layer adds it.
        input_step: The grid step of the layer's input (a scalar).
        weight_step: The kernel's grid step: a scalar, or one per output
            channel (as many as the bias has values).

    Returns:
        The rounded bias, in float32.
    """
    bias = ops.cast(bias, "float32")
    step = ops.cast(input_step, "float32") * ops.cast(weight_step, "float32")
    if len(step.shape) and step.shape[0] > 1:
        step = ops.reshape(step, tuple(bias.shape))
    step = ops.maximum(step, 1e-12)
    rounded = ops.round(bias / step) * step
    return bias + ops.stop_gradient(rounded - bias)


def _include_zero(low, high, symmetric):
    low = ops.minimum(ops.cast(low, "float32"), 0.0)
    high = ops.maximum(ops.cast(high, "float32"), 0.0)
    if symmetric:
        high = ops.maximum(-low, high)
        low = -high
    high = ops.maximum(high, low + _MIN_ACTIVATION_RANGE)
    return low, high


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedRangeQuantizer(Quantizer):
    """Fake-quantizes to a fixed range `[min_value, max_value]`.

    Used for outputs whose range is known: LiteRT's int8 LOGISTIC and
    SOFTMAX kernels output with scale 1/256 (range `[0, 255/256]`) and TANH
    with scale 1/128 (range `[-1, 127/128]`).

    Args:
        min_value: Lower end of the range (<= 0).
        max_value: Upper end of the range (> min_value, >= 0).
        num_bits: Bits of the integer grid, 2 to 8.
        narrow_range: Drop the lowest integer of the grid.
    """

    def __init__(self, min_value, max_value, num_bits=8, narrow_range=False):
        self.num_bits = check_num_bits(num_bits)
        min_value, max_value = float(min_value), float(max_value)
        if not min_value <= 0.0 <= max_value or min_value >= max_value:
            raise ValueError(
                "FixedRangeQuantizer needs min_value <= 0 <= max_value and "
                f"min_value < max_value; received min_value={min_value}, "
                f"max_value={max_value}."
            )
        self.min_value = min_value
        self.max_value = max_value
        self.narrow_range = bool(narrow_range)

    def __call__(self, inputs, training=False, weights=None):
        return _fake_quant(
            inputs,
            self.min_value,
            self.max_value,
            self.num_bits,
            self.narrow_range,
        )

    def step(self, weights=None):
        """The grid step of the tensor this quantizer rounds."""
        return _grid_step(
            self.min_value, self.max_value, self.num_bits, self.narrow_range
        )

    def get_config(self):
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "num_bits": self.num_bits,
            "narrow_range": self.narrow_range,
        }


def serialize(quantizer):
    """`keras.saving.serialize_keras_object` for a quantizer (or None)."""
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(config):
    """The quantizer described by `config` (a quantizer passes through)."""
    if config is None or isinstance(config, Quantizer):
        return config
    quantizer = keras.saving.deserialize_keras_object(config)
    if not isinstance(quantizer, Quantizer):
        raise ValueError(
            f"Expected a keras_compress Quantizer; {config!r} gave "
            f"{type(quantizer).__name__}."
        )
    return quantizer
