"""Inspecting the learned activation ranges of a QAT model.

`is_quantization_aware` tells whether a model carries its own fake-quant
ranges (and so converts to int8 without calibration data);
`unobserved_quantizers` finds ranges that were never learned: a model
converted before any training step would clip those activations to about
zero, so a converter should warn about them.
"""

from keras_compress.core import keras_private


def _owners(model):
    """Layers of `model` (itself included) that own range observers."""
    for layer in keras_private.flatten_layers(model, include_self=True):
        if hasattr(layer, "observer_variables"):
            yield layer


def is_quantization_aware(model):
    """True if `model` contains fake-quantization layers (from QAT).

    Args:
        model: A `keras.Model` or layer.

    Returns:
        bool.
    """
    return any(True for _ in _owners(model))


def observer_ranges(model):
    """The activation ranges a QAT model has learned.

    Args:
        model: A model from `quantize_model` (or containing
            `QuantizeWrapper`/`QuantizeLayer` layers).

    Returns:
        A dict `{name: (min, max)}` of floats, one entry per moving-average
        observer (`"<layer>/output"`, `"<layer>/pre_activation"`, ...).

    Example:

    ```python
    for name, (low, high) in observer_ranges(qat).items():
        print(f"{name}: [{low:.3f}, {high:.3f}]")
    ```
    """
    ranges = {}
    for owner in _owners(model):
        for name, min_var, max_var in owner.observer_variables():
            ranges[name] = (float(min_var.numpy()), float(max_var.numpy()))
    return ranges


def unobserved_quantizers(model):
    """Names of observers that never saw a training batch.

    Their range is still the initial `[0, 0]`: converting or evaluating the
    model then clips those activations to about zero. Train the model (at
    least a few steps) before converting it.

    Args:
        model: A QAT model.

    Returns:
        A sorted list of observer names (empty when all ranges are set).
    """
    return sorted(
        name
        for name, (low, high) in observer_ranges(model).items()
        if low == 0.0 and high == 0.0
    )
