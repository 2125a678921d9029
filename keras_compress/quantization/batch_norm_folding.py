"""Folding a BatchNormalization into the layer before it.

In inference a BatchNormalization is an affine map per channel,
`bn(y) = y * scale + offset` with `scale = gamma / sqrt(var + eps)` and
`offset = beta - mean * scale`. After a Dense or convolution
`y = x @ W + b` that is the same as one layer with

    W' = W * scale        (along the output channels)
    b' = b * scale + offset

QAT fake-quantizes `W'`, not `W`: it is `W'` that LiteRT stores, so the
integer file computes what training saw and has no separate BatchNorm.
While training, the BatchNorm's moving statistics stay as they were
(`gamma` and `beta` keep training): a QAT model starts from a trained
float model, whose statistics are already right.
"""

import keras
import numpy as np
from keras import layers as L
from keras import ops

# Layers a following BatchNormalization can be folded into, and the weight
# that carries their output channels.
_FOLD_TARGETS = (
    (L.SeparableConv2D, "pointwise_kernel"),
    (L.SeparableConv1D, "pointwise_kernel"),
    (L.DepthwiseConv1D, "kernel"),
    (L.DepthwiseConv2D, "kernel"),
    (L.Conv1DTranspose, "kernel"),
    (L.Conv2DTranspose, "kernel"),
    (L.Conv3DTranspose, "kernel"),
    (L.Conv1D, "kernel"),
    (L.Conv2D, "kernel"),
    (L.Conv3D, "kernel"),
    (L.Dense, "kernel"),
)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)


def folded_weight_name(layer):
    """The attribute of `layer` that BatchNorm folding scales, or None."""
    for layer_class, attribute in _FOLD_TARGETS:
        if isinstance(layer, layer_class):
            return attribute
    return None


def why_not_foldable(layer, batch_norm):
    """Why `batch_norm` cannot be folded into `layer`, or None if it can."""
    if folded_weight_name(layer) is None:
        return f"{type(layer).__name__} has no kernel to fold into"
    if not isinstance(batch_norm, L.BatchNormalization):
        return f"{type(batch_norm).__name__} is not a BatchNormalization"
    activation = getattr(layer, "activation", None)
    if activation not in (None, keras.activations.linear):
        # BN after a nonlinearity is not an affine map of the layer's output.
        return "the layer has an activation before the BatchNormalization"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "only channels_last layers are folded"
    axes = batch_norm.axis
    axes = list(axes) if isinstance(axes, (list, tuple)) else [axes]
    ndim = batch_norm.input_spec.ndim if batch_norm.input_spec else None
    if len(axes) != 1 or (axes[0] != -1 and axes[0] != (ndim or 0) - 1):
        return (
            f"BatchNormalization axis={batch_norm.axis} is not the channel "
            "axis (-1)"
        )
    if getattr(batch_norm, "renorm", False):
        return "BatchNormalization with renorm=True is not folded"
    return None


def fold_factors(batch_norm):
    """`(scale, offset)` with `bn(y) == y * scale + offset` in inference.

    Computed like `tf.nn.batch_normalization`, in float32.
    """

    def value(variable):
        return ops.cast(ops.convert_to_tensor(variable), "float32")

    variance = value(batch_norm.moving_variance)
    mean = value(batch_norm.moving_mean)
    scale = ops.rsqrt(variance + batch_norm.epsilon)
    if batch_norm.scale:
        scale = scale * value(batch_norm.gamma)
    offset = -mean * scale
    if batch_norm.center:
        offset = offset + value(batch_norm.beta)
    return scale, offset


def scale_kernel(layer, kernel, scale):
    """Multiplies `kernel` (the folded weight of `layer`) by `scale`.

    `scale` has one entry per output channel of `layer`; this reshapes it to
    the kernel's layout:

    - Dense `(in, out)`, Conv `(..., in, out)`, pointwise `(..., in, out)`:
      the last axis.
    - DepthwiseConv1D/2D `(..., in, multiplier)`: channel
      `i * multiplier + m`.
    - Conv*Transpose `(..., out, in)`: the second to last axis.
    """
    if isinstance(layer, _DEPTHWISE):
        channels, multiplier = kernel.shape[-2], kernel.shape[-1]
        return kernel * ops.reshape(scale, (channels, multiplier))
    if isinstance(layer, _TRANSPOSED):
        return kernel * ops.expand_dims(scale, -1)
    return kernel * scale


def fold_bias(bias, scale, offset):
    """The folded bias `b * scale + offset` (`bias` may be None)."""
    if bias is None:
        return offset
    return ops.cast(bias, "float32") * scale + offset


def fold_batch_norm(layer, batch_norm):
    """Returns a copy of `layer` with `batch_norm` folded into its weights.

    The copy computes `batch_norm(layer(x))` of inference mode in one layer
    (with a bias, even if `layer` had none).

    Args:
        layer: A built Dense, Conv1D/2D/3D, Conv*Transpose,
            DepthwiseConv1D/2D or SeparableConv1D/2D layer with a linear
            activation.
        batch_norm: The built BatchNormalization that follows it.

    Returns:
        A new layer of the same class.

    Example:

    ```python
    conv, bn = model.layers[1], model.layers[2]
    folded = fold_batch_norm(conv, bn)   # folded(x) == bn(conv(x))
    ```
    """
    reason = why_not_foldable(layer, batch_norm)
    if reason:
        raise ValueError(
            f"Cannot fold BatchNormalization '{batch_norm.name}' into layer "
            f"'{layer.name}' ({type(layer).__name__}): {reason}."
        )
    config = layer.get_config()
    config["use_bias"] = True
    folded = layer.__class__.from_config(config)
    folded.build_from_config(layer.get_build_config())
    scale, offset = fold_factors(batch_norm)
    attribute = folded_weight_name(layer)
    for target, source in zip(folded.weights, layer.weights):
        target.assign(source)
    getattr(folded, attribute).assign(
        scale_kernel(
            layer, ops.cast(getattr(layer, attribute), "float32"), scale
        )
    )
    bias = layer.bias if layer.use_bias else None
    folded.bias.assign(fold_bias(bias, scale, offset))
    return folded


class _CallRecorder:
    """A layer's `call` that logs `(layer, inputs, outputs)` of each call."""

    def __init__(self, layer, log):
        self.layer = layer
        self.call = layer.call
        self.log = log

    def __call__(self, inputs, *args, **kwargs):
        outputs = self.call(inputs, *args, **kwargs)
        self.log.append((self.layer, inputs, outputs))
        return outputs


def _with_calls(layers, calls, run):
    """Runs `run()` with `layer.call` replaced by `calls[i]`, then restores."""
    originals = [layer.call for layer in layers]
    try:
        for layer, call in zip(layers, calls):
            object.__setattr__(layer, "call", call)
        return run()
    finally:
        for layer, call in zip(layers, originals):
            object.__setattr__(layer, "call", call)


def subclassed_fold_pairs(model, layers, input_shape):
    """The BatchNorms of a subclassed model that fold into the layer before.

    A subclassed model's forward pass is Python code, so the pairs are found
    by running it: once on symbolic inputs, logging what each of its leaf
    layers takes and returns (a BatchNormalization whose input *is* the
    output of one of `layers`, each called once), then once on numbers with
    the pairs folded (the layer computing `bn(layer(x))`, the BatchNorm
    passing its input through), kept only if the model's output does not
    change. The second run catches what the log cannot see: the layer's
    raw output also used by an op in `call()` (`x + bn(x)`).

    Args:
        model: A built subclassed model (a copy: its layers' `call` is
            replaced while this runs, then restored).
        layers: The layers that will be quantized (fold targets).
        input_shape: The model's input shape (batch dimension `None`).

    Returns:
        `[(layer, batch_norm)]`.
    """
    from keras_compress import rewrite

    leaves = rewrite.leaf_layers(model)
    log = []
    _with_calls(
        leaves,
        [_CallRecorder(layer, log) for layer in leaves],
        lambda: model.compute_output_spec(rewrite.symbolic_inputs(input_shape)),
    )
    counts = {}
    for layer, _, _ in log:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    targets = {id(layer) for layer in layers}
    pairs = []
    for batch_norm, inputs, _ in log:
        if not isinstance(batch_norm, L.BatchNormalization):
            continue
        producer = next((p for p, _, out in log if out is inputs), None)
        if (
            producer is not None
            and id(producer) in targets
            and counts[id(producer)] == counts[id(batch_norm)] == 1
            and why_not_foldable(producer, batch_norm) is None
        ):
            pairs.append((producer, batch_norm))
    return [pair for pair in pairs if _folds_exactly(model, pair, input_shape)]


def _folds_exactly(model, pair, input_shape):
    if not isinstance(input_shape, (list, tuple)) or any(
        not isinstance(d, int) for d in input_shape[1:]
    ):
        return False  # no sample to check on: leave the BatchNorm float
    # Small non-negative integers: valid images and valid token ids alike.
    x = np.random.default_rng(0).integers(0, 3, size=(2, *input_shape[1:]))
    x = x.astype("float32")
    reference = ops.convert_to_numpy(model(x, training=False))
    layer, batch_norm = pair
    layer_call, batch_norm_call = layer.call, batch_norm.call

    def folded_call(inputs, *args, **kwargs):
        return batch_norm_call(layer_call(inputs, *args, **kwargs), False)

    folded = _with_calls(
        [layer, batch_norm],
        [folded_call, lambda inputs, *args, **kwargs: inputs],
        lambda: ops.convert_to_numpy(model(x, training=False)),
    )
    scale = max(float(np.abs(reference).max()), 1.0)
    return bool(np.allclose(folded, reference, rtol=1e-4, atol=1e-5 * scale))
