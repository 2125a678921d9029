"""GPTQ: error-compensating rounding of Dense and Conv2D kernels.

Round-to-nearest quantizes each weight on its own. GPTQ (Frantar et al.,
"GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023) quantizes a kernel one input column at a time and
moves each column's rounding error onto the columns not yet quantized,
weighted by the inverse Hessian `H = X^T X` of the layer's inputs on
calibration data, so that the layer's *outputs* change least.

Keras core has GPTQ for Dense-type layers (storage only, no LiteRT file)
and ai-edge-quantizer has it for fully connected ops (and only with float
activations); neither covers convolutions. Here the kernel of every Dense
and Conv2D layer is rounded in NumPy (a convolution is a matrix product
over its input patches) onto the per-output-channel symmetric grid that
LiteRT stores, `scale = max|w| / (2^(bits-1) - 1)`, with each channel's
largest weight kept in place so that the quantizer, recomputing the scale
from the values, finds the same grid and stores the values exactly.

All layers are rounded from the float model's activations (one forward
pass), not layer after layer through the already rounded model: simpler
for every kind of model, at some loss of the method's compounding benefit.
"""

import numpy as np

from keras_compress import rewrite

# Hessian damping, relative to its mean diagonal (the paper's 1 %).
_DAMPING = 0.01


def supports(layer):
    """Whether GPTQ here can round `layer`'s kernel (Dense, or a Conv2D
    without groups)."""
    import keras

    if isinstance(layer, keras.layers.Dense):
        return True
    return (
        type(layer) is keras.layers.Conv2D
        and getattr(layer, "groups", 1) == 1
        and layer.data_format == "channels_last"
    )


def layer_inputs(model, layers, data):
    """The inputs each of `layers` receives when `model` runs on `data`.

    Args:
        model: A built `keras.Model`.
        layers: Layers of `model` (each called once per forward pass).
        data: A NumPy array, or a list of arrays (one per model input).

    Returns:
        `{id(layer): array}`, inputs concatenated over the batches.
    """
    captured = {id(layer): [] for layer in layers}
    originals = {}

    def recorder(layer, call):
        def record(inputs, *args, **kwargs):
            captured[id(layer)].append(np.asarray(inputs))
            return call(inputs, *args, **kwargs)

        return record

    try:
        for layer in layers:
            originals[id(layer)] = layer.call
            # An instance attribute: Keras's __call__ looks `call` up on
            # the instance, and the class stays untouched.
            layer.call = recorder(layer, layer.call)
        inputs = data if isinstance(data, list) else [data]
        for start in range(0, len(inputs[0]), 64):
            batch = [a[start : start + 64] for a in inputs]
            model(batch if len(batch) > 1 else batch[0], training=False)
    finally:
        for layer in layers:
            del layer.call
    return {key: np.concatenate(parts) for key, parts in captured.items()}


def quantize_kernel(kernel, inputs, bits, layer):
    """GPTQ-rounded `kernel`, as float values on the int grid.

    Args:
        kernel: The Dense `(in, out)` or Conv2D `(kh, kw, cin, out)` kernel.
        inputs: What the layer received on calibration data.
        bits: Weight bits (2 to 8).
        layer: The layer (for a convolution's strides, padding, dilation).

    Returns:
        An array shaped like `kernel`.
    """
    out_channels = kernel.shape[-1]
    weights = np.asarray(kernel, np.float64).reshape(-1, out_channels).T
    columns = _columns(inputs, kernel, layer)
    hessian = columns.T @ columns / max(1, len(columns))
    quantized = _gptq(weights, hessian, bits)
    return quantized.T.reshape(kernel.shape).astype(kernel.dtype)


def _columns(inputs, kernel, layer):
    """The layer's inputs as rows of the matrix its kernel multiplies."""
    import keras

    if isinstance(layer, keras.layers.Dense):
        return np.asarray(inputs, np.float64).reshape(-1, kernel.shape[0])
    import tensorflow as tf

    kh, kw = kernel.shape[:2]
    patches = tf.image.extract_patches(
        inputs,
        sizes=[1, kh, kw, 1],
        strides=[1, *layer.strides, 1],
        rates=[1, *layer.dilation_rate, 1],
        padding=layer.padding.upper(),
    )
    # Patches are flattened (kh, kw, cin), like the kernel's first axes.
    return np.asarray(patches, np.float64).reshape(
        -1, kh * kw * kernel.shape[2]
    )


def _gptq(weights, hessian, bits):
    """GPTQ of `weights` (rows = output channels) under `hessian`."""
    weights = weights.copy()
    rows = np.arange(len(weights))
    qmax = 2 ** (bits - 1) - 1
    # Each channel's largest weight sets its scale and is kept as is (it
    # lands on +-qmax exactly), so that a quantizer recomputing the scale
    # from the values (LiteRT's, `max|w| / qmax`) finds the same grid.
    largest = np.argmax(np.abs(weights), axis=1)
    anchors = weights[rows, largest].copy()
    scale = np.abs(anchors) / qmax
    scale[scale == 0] = 1.0
    # Inputs that are always zero carry no information: zero their weights.
    dead = np.diag(hessian) == 0
    hessian = hessian.copy()
    hessian[dead, dead] = 1.0
    weights[:, dead] = 0.0
    weights[rows, largest] = anchors
    hessian += _DAMPING * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    # The upper Cholesky factor of H^-1: row i holds how the columns after
    # i absorb column i's error.
    inverse = np.linalg.cholesky(np.linalg.inv(hessian)).T
    quantized = np.zeros_like(weights)
    for i in range(weights.shape[1]):
        column = weights[:, i]
        levels = np.clip(np.round(column / scale), -qmax, qmax)
        quantized[:, i] = levels * scale
        error = (column - quantized[:, i]) / inverse[i, i]
        weights[:, i + 1 :] -= np.outer(error, inverse[i, i + 1 :])
        later = largest > i
        weights[rows[later], largest[later]] = anchors[later]
    return quantized


def round_layers(model, bits_by_path, data):
    """GPTQ-rounds the kernels of a model's layers, in place.

    Args:
        model: A built float `keras.Model` (a copy the caller owns: its
            kernels are overwritten).
        bits_by_path: `{layer path: weight bits}`; layers `supports`
            rejects are skipped.
        data: Calibration inputs (array, or a list per model input).

    Returns:
        The paths of the layers rounded.
    """
    layers = dict(rewrite.iter_layers(model))
    chosen = [
        (path, layers[path])
        for path in bits_by_path
        if path in layers and supports(layers[path])
    ]
    if not chosen:
        return []
    inputs = layer_inputs(model, [layer for _, layer in chosen], data)
    for path, layer in chosen:
        kernel = layer.kernel
        rounded = quantize_kernel(
            np.asarray(kernel), inputs[id(layer)], bits_by_path[path], layer
        )
        kernel.assign(rounded)
    return [path for path, _ in chosen]
