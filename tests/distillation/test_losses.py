"""The distillation loss: T² · KL(softmax(t/T) ‖ softmax(s/T))."""

import keras
import numpy as np
import pytest

from keras_compress import distillation
from keras_compress.distillation import losses

TEACHER = np.array([[2.0, 0.0, -1.0]], "float32")
STUDENT = np.array([[0.0, 1.0, 0.0]], "float32")


def _reference(teacher, student, temperature):
    def softmax(z):
        z = z / temperature
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p, q = (
        softmax(teacher.astype("float64")),
        softmax(student.astype("float64")),
    )
    return temperature**2 * np.sum(p * np.log(p / q), axis=-1)


def test_known_value():
    # The value from the issue: Keras's LogitsDistillation returns 10.48.
    loss = distillation.SoftTargetKLDivergence(temperature=3)
    assert float(loss(TEACHER, STUDENT)) == pytest.approx(1.0986, abs=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 7.0])
def test_matches_reference_and_keras_io_formula(temperature):
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(5, 4)).astype("float32") * 3
    student = rng.normal(size=(5, 4)).astype("float32") * 3
    expected = _reference(teacher, student, temperature)
    per_sample = distillation.soft_target_kl_divergence(
        teacher, student, temperature
    )
    np.testing.assert_allclose(per_sample, expected, rtol=1e-4, atol=1e-6)
    mean = distillation.SoftTargetKLDivergence(temperature)(teacher, student)
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-4)
    # The keras.io example: KLDivergence on softened probabilities times T².
    keras_io = keras.losses.KLDivergence()(
        keras.ops.softmax(teacher / temperature),
        keras.ops.softmax(student / temperature),
    ) * (temperature**2)
    assert float(mean) == pytest.approx(float(keras_io), rel=1e-3)


def test_zero_for_equal_logits_and_sample_weight():
    loss = distillation.SoftTargetKLDivergence(2.0)
    assert float(loss(TEACHER, TEACHER)) == pytest.approx(0.0, abs=1e-7)
    both = np.concatenate([TEACHER, TEACHER])
    other = np.concatenate([STUDENT, TEACHER])
    weighted = loss(both, other, sample_weight=np.array([1.0, 0.0]))
    full = loss(TEACHER, STUDENT)
    # sum_over_batch_size: the weighted sum divided by the batch size.
    assert float(weighted) == pytest.approx(float(full) / 2, rel=1e-5)


def test_bfloat16_logits_are_computed_in_float32():
    loss = distillation.SoftTargetKLDivergence(3)
    value = loss(
        keras.ops.cast(TEACHER, "bfloat16"), keras.ops.cast(STUDENT, "bfloat16")
    )
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(1.0986, abs=1e-3)


def test_serialization_round_trip():
    loss = distillation.SoftTargetKLDivergence(temperature=4.0, name="kd")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(restored, distillation.SoftTargetKLDivergence)
    assert restored.temperature == 4.0 and restored.name == "kd"
    function = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(
            distillation.soft_target_kl_divergence
        )
    )
    assert function is distillation.soft_target_kl_divergence


def test_bad_temperature():
    for temperature in (0, -1.0, float("nan"), "3", True):
        with pytest.raises(ValueError, match="temperature="):
            distillation.SoftTargetKLDivergence(temperature)


def test_get_loss():
    assert isinstance(losses.get_loss("mse", "loss"), keras.losses.Loss)
    kld = keras.losses.KLDivergence()
    assert losses.get_loss(kld, "loss") is kld
    with pytest.raises(ValueError, match="not_a_loss"):
        losses.get_loss("not_a_loss", "loss")
    with pytest.raises(ValueError, match="loss"):
        losses.get_loss(3, "loss")


# CorrelationDistillation (DIST).


def _pearson(a, b, axis):
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


def _softmax(z, temperature):
    z = z.astype("float64") / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_correlation_loss_matches_the_dist_formula(temperature):
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(8, 5)).astype("float32") * 3
    student = rng.normal(size=(8, 5)).astype("float32")
    p, q = _softmax(teacher, temperature), _softmax(student, temperature)
    inter = 1 - _pearson(q, p, axis=-1)
    intra = np.mean(1 - _pearson(q, p, axis=0))
    expected = temperature**2 * np.mean(0.5 * inter + 2.0 * intra)
    loss = distillation.CorrelationDistillation(
        temperature, inter_weight=0.5, intra_weight=2.0
    )
    assert float(loss(teacher, student)) == pytest.approx(expected, rel=1e-5)


def test_correlation_loss_ignores_the_students_confidence():
    # Same ranking and the same relations between samples: no loss, while
    # the KL divergence still asks the student to copy the probabilities.
    teacher = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]], "float32")
    loss = distillation.CorrelationDistillation()
    assert float(loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    kl = distillation.SoftTargetKLDivergence(1.0)
    less_sure = teacher * 0.5
    assert float(loss(teacher, less_sure)) < 0.1 * float(kl(teacher, less_sure))


def test_correlation_loss_bad_arguments_and_config():
    for argument in ("inter_weight", "intra_weight"):
        with pytest.raises(ValueError, match=f"{argument}=-1"):
            distillation.CorrelationDistillation(**{argument: -1})
    with pytest.raises(ValueError, match="temperature=0"):
        distillation.CorrelationDistillation(temperature=0)
    loss = distillation.CorrelationDistillation(2.0, intra_weight=0.0)
    copy = distillation.CorrelationDistillation.from_config(loss.get_config())
    assert (copy.temperature, copy.inter_weight, copy.intra_weight) == (
        2.0,
        1.0,
        0.0,
    )
