"""Mixed-precision models going into a converter."""

from keras_compress.core import keras_private

_LOW_PRECISION = ("float16", "bfloat16")


def float32_compute_copy(model):
    """`model`, or a float32 copy of it if any layer computes in 16 bits.

    LiteRT has no bfloat16 kernels (a `mixed_bfloat16` model fails in the
    converter: "'tf.Conv2D' op is neither a custom op nor a flex op") and
    ONNX Runtime's CPU provider has few. The weights of a mixed-precision
    model are float32 already, so a copy computing in float32 holds the
    same function up to the 16-bit rounding of the activations; a
    half-precision file is then asked for with `mode="float16"` /
    `float16=True`.

    Args:
        model: A built `keras.Model`.

    Returns:
        `model` itself, or a new float32 `keras.Model`.
    """
    if not any(
        layer.compute_dtype in _LOW_PRECISION
        for layer in keras_private.flatten_layers(model, include_self=True)
    ):
        return model
    from keras_compress import mixed_precision

    return mixed_precision.to_float32(model)
