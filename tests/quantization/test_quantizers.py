"""Fake quantizers: grids, ranges, observers, validation, config."""

import keras
import numpy as np
import pytest

from keras_compress import quantization as q
from keras_compress.quantization import quantizers


def _levels(values):
    return np.unique(np.round(np.asarray(values), 7))


@pytest.mark.parametrize("num_bits", [1, 9, 0, 8.0, True, "8"])
def test_num_bits_outside_2_to_8_raises(num_bits):
    for make in (
        lambda: q.LastValueQuantizer(num_bits=num_bits),
        lambda: q.MovingAverageQuantizer(num_bits=num_bits),
        lambda: q.FixedRangeQuantizer(0.0, 1.0, num_bits=num_bits),
        lambda: q.QuantizeScheme(weight_bits=num_bits),
    ):
        with pytest.raises(ValueError, match="from 2 to 8"):
            make()


def test_per_tensor_weights_are_symmetric_narrow_range():
    w = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
    out = keras.ops.convert_to_numpy(q.LastValueQuantizer()(w))
    scale = np.abs(w).max() / 127
    np.testing.assert_allclose(out, np.round(w / scale) * scale, atol=1e-6)
    integers = np.round(out / scale)
    assert integers.min() >= -127 and integers.max() <= 127
    assert np.abs(integers).max() == 127


def test_per_channel_weights_have_one_scale_per_channel():
    w = np.random.default_rng(1).normal(size=(3, 3, 4, 6)).astype("float32")
    w *= np.arange(1, 7, dtype="float32")  # very different channel ranges
    out = keras.ops.convert_to_numpy(
        q.LastValueQuantizer(per_axis=True, axis=-1)(w)
    )
    scales = np.abs(w).reshape(-1, 6).max(axis=0) / 127
    np.testing.assert_allclose(out, np.round(w / scales) * scales, atol=1e-5)


def test_trailing_axes_are_merged_into_one_channel_axis():
    # A depthwise kernel (h, w, in, multiplier): LiteRT's channel is
    # in * multiplier.
    w = np.random.default_rng(2).normal(size=(3, 3, 4, 2)).astype("float32")
    merged = keras.ops.convert_to_numpy(
        q.LastValueQuantizer(per_axis=True, axis=(-2, -1))(w)
    )
    flat = keras.ops.convert_to_numpy(
        q.LastValueQuantizer(per_axis=True, axis=-1)(w.reshape(3, 3, 1, 8))
    )
    np.testing.assert_allclose(merged, flat.reshape(w.shape), atol=1e-7)


def test_four_bit_weights_use_fifteen_levels():
    w = np.random.default_rng(3).normal(size=(64, 16)).astype("float32")
    out = keras.ops.convert_to_numpy(q.LastValueQuantizer(num_bits=4)(w))
    scale = np.abs(w).max() / 7
    integers = np.round(out / scale)
    assert set(np.unique(integers)) <= set(range(-7, 8))
    assert len(_levels(out)) <= 15


def test_zero_channel_stays_zero_without_nan():
    w = np.random.default_rng(4).normal(size=(3, 3, 2, 4)).astype("float32")
    w[..., 1] = 0.0
    out = keras.ops.convert_to_numpy(q.LastValueQuantizer(per_axis=True)(w))
    assert np.isfinite(out).all()
    assert np.all(out[..., 1] == 0.0)
    assert np.all(out[w == 0] == 0)  # zeros are exact on a symmetric grid


def test_asymmetric_weights_cover_min_to_max():
    w = np.linspace(-1.0, 3.0, 50, dtype="float32")
    out = keras.ops.convert_to_numpy(q.LastValueQuantizer(symmetric=False)(w))
    assert out.min() == pytest.approx(-1.0, abs=0.02)
    assert out.max() == pytest.approx(3.0, abs=0.02)


@pytest.mark.parametrize(
    "quantizer, shape",
    [
        (q.LastValueQuantizer(), (16, 8)),
        (q.LastValueQuantizer(num_bits=4), (16, 8)),
        (q.LastValueQuantizer(per_axis=True), (3, 3, 4, 6)),
        (q.LastValueQuantizer(per_axis=True, axis=(-2, -1)), (3, 3, 4, 2)),
    ],
)
def test_weight_step_is_the_grid_the_quantizer_rounds_to(quantizer, shape):
    w = np.random.default_rng(5).normal(size=shape).astype("float32")
    out = keras.ops.convert_to_numpy(quantizer(w)).reshape(-1, shape[-1])
    step = keras.ops.convert_to_numpy(quantizer.weight_step(w))
    if quantizer.per_axis:
        out = out.reshape(-1, step.shape[0])
    # Every value is a whole number of steps, the largest one at the end
    # of the grid (127 or 7 steps).
    steps = out / step
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    levels = 2 ** (quantizer.num_bits - 1) - 1
    assert np.round(np.abs(steps).max()) == levels


def test_a_bias_lands_on_the_int32_grid_with_a_straight_gradient():
    bias = np.array([0.0104, -0.0031, 0.25], "float32")
    # Per channel: input step 0.02 times weight steps 0.1, 0.05, 0.5.
    rounded = quantizers.quantize_bias(bias, 0.02, np.array([0.1, 0.05, 0.5]))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(rounded),
        [0.010, -0.003, 0.25],
        atol=1e-7,
    )
    # Per tensor, any bias shape (an attention projection's (heads, dim)).
    rounded = quantizers.quantize_bias(
        np.full((2, 3), 0.0104, "float32"), 0.02, 0.1
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rounded), 0.010)
    import tensorflow as tf

    variable = tf.Variable(bias)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(
            3.0 * quantizers.quantize_bias(variable, 0.02, 0.1)
        )
    np.testing.assert_allclose(tape.gradient(loss, variable), [3.0] * 3)


class _Holder(keras.layers.Layer):
    pass


def test_moving_average_observer_starts_at_first_batch_then_averages():
    quantizer = q.MovingAverageQuantizer(ema_decay=0.9)
    holder = _Holder()
    state = quantizer.build((None, 4), "out", holder)
    assert [v.trainable for v in holder.weights] == [False, False]
    first = np.array([[-1.0, 0.0, 2.0, 1.0]], "float32")
    quantizer(first, training=True, weights=state)
    assert float(state["min"].numpy()) == pytest.approx(-1.0)
    assert float(state["max"].numpy()) == pytest.approx(2.0)
    second = np.array([[-3.0, 0.0, 4.0, 1.0]], "float32")
    quantizer(second, training=True, weights=state)
    assert float(state["min"].numpy()) == pytest.approx(-1.2)
    assert float(state["max"].numpy()) == pytest.approx(2.2)
    # Frozen at inference: values outside the range are clipped.
    out = keras.ops.convert_to_numpy(
        quantizer(second, training=False, weights=state)
    )
    assert float(state["max"].numpy()) == pytest.approx(2.2)
    assert out.max() == pytest.approx(2.2, abs=0.01)
    assert out.min() == pytest.approx(-1.2, abs=0.01)


def test_observer_range_contains_zero():
    quantizer = q.MovingAverageQuantizer()
    holder = _Holder()
    state = quantizer.build((None, 2), "out", holder)
    x = np.array([[2.0, 3.0]], "float32")  # all positive
    out = keras.ops.convert_to_numpy(quantizer(x, training=True, weights=state))
    step = 3.0 / 255
    np.testing.assert_allclose(out, np.round(x / step) * step, atol=1e-5)
    assert float(quantizer.step(state)) == pytest.approx(step)
    zero = keras.ops.convert_to_numpy(
        quantizer(np.zeros((1, 2), "float32"), training=False, weights=state)
    )
    assert np.all(zero == 0.0)


def test_moving_average_needs_its_variables():
    with pytest.raises(ValueError, match="build"):
        q.MovingAverageQuantizer()(np.ones((1, 2), "float32"))


def test_fixed_range_quantizer_matches_litert_sigmoid_scale():
    quantizer = q.FixedRangeQuantizer(0.0, 255.0 / 256.0)
    x = np.linspace(0, 1, 1000, dtype="float32")
    out = keras.ops.convert_to_numpy(quantizer(x))
    np.testing.assert_allclose(out * 256, np.round(out * 256), atol=1e-4)
    assert float(quantizer.step()) == pytest.approx(1 / 256)
    with pytest.raises(ValueError, match="min_value <= 0"):
        q.FixedRangeQuantizer(0.5, 1.0)


@pytest.mark.parametrize(
    "quantizer",
    [
        q.LastValueQuantizer(num_bits=4, per_axis=True, axis=(-2, -1)),
        q.MovingAverageQuantizer(num_bits=6, ema_decay=0.99, symmetric=True),
        q.FixedRangeQuantizer(-1.0, 127.0 / 128.0),
    ],
)
def test_quantizers_serialize(quantizer):
    config = keras.saving.serialize_keras_object(quantizer)
    assert config["registered_name"].startswith("keras_compress>")
    assert keras.saving.deserialize_keras_object(config) == quantizer
