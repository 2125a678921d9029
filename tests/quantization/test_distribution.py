"""QAT under tf.distribute.MirroredStrategy, XLA and mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compress import quantization as q
from keras_compress.demo import reference_cnn
from tests.quantization import litert_checks

SHAPE = (12, 12, 1)


def _data():
    return litert_checks.toy_images(SHAPE, 4, 64, seed=0)


def test_mirrored_strategy_on_two_devices(strategy):
    x, y = _data()
    model = reference_cnn(SHAPE, 4)
    with strategy.scope():
        qat = q.quantize_model(model)
        litert_checks.compile_and_fit(qat, x, y)
    _, min_var, max_var = qat.get_layer("quant_dense").observer_variables()[0]
    assert isinstance(min_var.value, tf.distribute.DistributedValues)
    # The observers are averaged over the replicas: both hold one range.
    replicas = [v.numpy() for v in max_var.value.values]
    assert replicas[0] == replicas[1] > 0.0
    assert q.unobserved_quantizers(qat) == []
    assert np.isfinite(litert_checks.predict(qat, x)).all()


def test_jit_compile_training():
    x, y = _data()
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    qat = q.quantize_model(model)
    litert_checks.compile_and_fit(qat, x, y, jit_compile=True)
    assert q.unobserved_quantizers(qat) == []
    # XLA fuses and reorders float math: an element near a rounding
    # boundary may land one output step away from the eager result.
    low, high = q.observer_ranges(qat)["quant_dense/output"]
    litert_checks.check_matches_keras(
        qat.predict(x, verbose=0, batch_size=64),
        litert_checks.predict(qat, x),
        (high - low) / 255,
    )


@pytest.fixture
def mixed_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy("float32")


def test_mixed_precision_fake_quant_runs_in_float32(mixed_bfloat16):
    x, y = _data()
    model = reference_cnn(SHAPE, 4)
    qat = q.quantize_model(model)
    wrapper = qat.get_layer("quant_dense_1")
    assert wrapper.layer.compute_dtype == "bfloat16"
    litert_checks.compile_and_fit(qat, x, y)
    for _, min_var, max_var in wrapper.observer_variables():
        assert min_var.dtype == max_var.dtype == "float32"
    assert wrapper.layer.kernel.dtype == "float32"
    outputs = qat.predict(x, verbose=0)
    assert outputs.dtype == "bfloat16" or str(outputs.dtype) == "bfloat16"
    assert np.isfinite(outputs.astype("float32")).all()
    assert q.unobserved_quantizers(qat) == []
