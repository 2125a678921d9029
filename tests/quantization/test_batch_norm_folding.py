"""BatchNormalization folding: exact in float, and in the QAT wrapper."""

import warnings

import keras
import numpy as np
import pytest

from keras_compress import convert
from keras_compress import quantization as q
from tests.quantization import litert_checks

L = keras.layers

FOLDABLE = {
    "dense": (lambda: L.Dense(6), (5,)),
    "dense_no_bias": (lambda: L.Dense(6, use_bias=False), (5,)),
    "conv1d": (lambda: L.Conv1D(6, 3, padding="causal"), (9, 4)),
    "conv2d": (lambda: L.Conv2D(6, 3, use_bias=False), (7, 7, 3)),
    "depthwise": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (7, 7, 3)),
    "separable": (lambda: L.SeparableConv2D(6, 3), (7, 7, 3)),
    "transpose": (lambda: L.Conv2DTranspose(6, 3, strides=2), (5, 5, 3)),
}


def _with_random_stats(batch_norm, rng):
    channels = batch_norm.moving_mean.shape
    batch_norm.gamma.assign(rng.uniform(0.5, 2.0, channels))
    batch_norm.beta.assign(rng.normal(size=channels))
    batch_norm.moving_mean.assign(rng.normal(size=channels))
    batch_norm.moving_variance.assign(rng.uniform(0.1, 3.0, channels))
    return batch_norm


def _layer_and_bn(kind):
    make, shape = FOLDABLE[kind]
    rng = np.random.default_rng(0)
    layer = make()
    x = rng.normal(size=(4, *shape)).astype("float32")
    y = layer(x)
    batch_norm = L.BatchNormalization()
    batch_norm(y)
    return layer, _with_random_stats(batch_norm, rng), x


@pytest.mark.parametrize("kind", sorted(FOLDABLE))
def test_folded_layer_equals_layer_then_batch_norm(kind):
    layer, batch_norm, x = _layer_and_bn(kind)
    expected = batch_norm(layer(x), training=False)
    folded = q.fold_batch_norm(layer, batch_norm)
    assert type(folded) is type(layer)
    np.testing.assert_allclose(folded(x), expected, rtol=1e-5, atol=1e-5)


def test_not_foldable_after_an_activation():
    layer = L.Dense(4, activation="relu")
    batch_norm = L.BatchNormalization()
    batch_norm(layer(np.ones((1, 3), "float32")))
    with pytest.raises(ValueError, match="activation before"):
        q.fold_batch_norm(layer, batch_norm)
    with pytest.raises(ValueError, match="activation before"):
        q.QuantizeWrapper(layer, batch_norm=batch_norm)


def test_not_foldable_on_another_axis():
    layer = L.Conv2D(4, 1)
    batch_norm = L.BatchNormalization(axis=1)
    batch_norm(layer(np.ones((1, 4, 4, 2), "float32")))
    with pytest.raises(ValueError, match="channel axis"):
        q.fold_batch_norm(layer, batch_norm)


@pytest.mark.parametrize("kind", ["conv2d", "depthwise", "dense_no_bias"])
def test_wrapper_quantizes_the_folded_kernel(kind):
    # The wrapper computes conv(x, fq(W * scale)) + folded bias: the same
    # as the float-folded layer with its kernel fake-quantized.
    layer, batch_norm, x = _layer_and_bn(kind)
    folded = q.fold_batch_norm(layer, batch_norm)
    attribute = "kernel"
    quantizer = q.QuantizeScheme().get_quantize_config(layer)
    kernel_quantizer = quantizer.weight_quantizers[attribute]
    folded_kernel = getattr(folded, attribute)
    folded_kernel.assign(kernel_quantizer(folded_kernel.value))
    wrapper = q.QuantizeWrapper(
        keras.layers.deserialize(keras.layers.serialize(layer)),
        batch_norm=keras.layers.deserialize(keras.layers.serialize(batch_norm)),
        quantize_output=False,
    )
    wrapper.build(x.shape)
    wrapper.layer.set_weights(layer.get_weights())
    wrapper.batch_norm.set_weights(batch_norm.get_weights())
    np.testing.assert_allclose(wrapper(x), folded(x), rtol=1e-5, atol=1e-5)


def test_qat_keeps_statistics_and_trains_gamma_beta():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    outputs = L.Dense(3)(L.Flatten()(x))
    model = keras.Model(inputs, outputs)
    x, y = litert_checks.toy_images((6, 6, 2), 3, 64, seed=0)
    qat = q.quantize_model(model)
    wrapper = qat.get_layer("quant_conv2d")
    assert wrapper.batch_norm is not None and wrapper.activation is not None
    assert not any(
        isinstance(layer, L.BatchNormalization) for layer in qat.layers
    )
    bn = wrapper.batch_norm
    before = [
        bn.moving_mean.numpy(),
        bn.moving_variance.numpy(),
        bn.gamma.numpy(),
    ]
    litert_checks.compile_and_fit(qat, x, y, learning_rate=1e-2)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), before[1])
    assert not np.array_equal(bn.gamma.numpy(), before[2])


def test_converted_file_has_no_batch_norm_ops_and_matches():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(8, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    outputs = L.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            _with_random_stats(layer, rng)
    x, _ = litert_checks.toy_images((8, 8, 3), 3, 128, seed=1)
    qat = litert_checks.observe(q.quantize_model(model), x)
    content = litert_checks.convert_qat(qat)
    names = [op.name for op in litert_checks.ops_of(content)]
    assert names == [
        "QUANTIZE",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "MEAN",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "DEQUANTIZE",
    ]
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )


def pre_activation_model():
    """BatchNorms no kernel precedes: after an Add (ResNetV2), a pooling
    and a Concatenate (DenseNet), and after a conv whose output is also
    used elsewhere."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    y = L.BatchNormalization(name="bn_shared_conv")(x)
    y = L.ReLU()(y)
    y = L.Conv2D(8, 3, padding="same")(y)
    x = L.Add()([x, y])
    x = L.BatchNormalization(name="bn_after_add")(x)
    x = L.ReLU()(x)
    x = L.AveragePooling2D(2)(x)
    x = L.BatchNormalization(name="bn_after_pool")(x)
    y = L.Conv2D(4, 1)(x)
    x = L.Concatenate()([x, y])
    x = L.BatchNormalization(name="bn_after_concat")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3)(x))


def test_batch_norms_that_cannot_fold_run_as_int8_mul_and_add():
    model = pre_activation_model()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            _with_random_stats(layer, rng)
    x, y = litert_checks.toy_images((8, 8, 3), 3, 128, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no layer left float
        qat = q.quantize_model(model)
    standalone = [
        layer.name
        for layer in qat.layers
        if isinstance(getattr(layer, "layer", None), L.BatchNormalization)
    ]
    assert standalone == [
        "quant_bn_shared_conv",
        "quant_bn_after_add",
        "quant_bn_after_pool",
        "quant_bn_after_concat",
    ]
    # BN -> ReLU: LiteRT fuses ADD+RELU, so only the ReLU quantizes.
    assert qat.get_layer("quant_bn_after_add").quantize_output is False
    # Trained: gamma and beta move, the statistics do not.
    bn = qat.get_layer("quant_bn_after_pool").layer
    before = [v.numpy() for v in (bn.moving_mean, bn.moving_variance, bn.beta)]
    litert_checks.compile_and_fit(qat, x, y, learning_rate=1e-2)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before[0])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), before[1])
    assert not np.array_equal(bn.beta.numpy(), before[2])

    content = convert.to_tflite(qat, "int8", verbose=0)
    litert_checks.check_integer_end_to_end(content)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )
    names = [op.name for op in litert_checks.ops_of(content)]
    assert names.count("MUL") == 4 and "AVERAGE_POOL_2D" in names
    # Nothing of the average pooling's tie rounding, which only makes the
    # Keras model round as the file does (Keras's own exporter keeps it).
    assert set(names) <= {
        "QUANTIZE",
        "CONV_2D",
        "MUL",
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "MEAN",
        "FULLY_CONNECTED",
        "DEQUANTIZE",
    }, names
