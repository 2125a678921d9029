"""Distillation with a pruned student, saving, and MirroredStrategy."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compress import convert
from keras_compress import distillation
from keras_compress import pruning
from tests.distillation import common

FD = distillation.FeatureDistillation


def _pruned_student():
    return pruning.prune_low_magnitude(
        common.student_model(),
        pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=2),
    )


def test_pruned_student_distills_strips_and_converts():
    teacher, student = common.teacher_model(), _pruned_student()
    x, y = common.data()
    # A pruned layer can be named by its name before pruning.
    distiller = distillation.Distiller(
        student, teacher, feature_distillations=FD("t_hidden", "s_hidden")
    )
    common.compile_distiller(distiller)
    callback = pruning.UpdatePruningStep()
    distiller.fit(
        x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback]
    )
    # The callback found the student's three pruned layers through the
    # Distiller, once each.
    assert len(callback._pruners) == 3
    assert {p.layer.name for p in callback._pruners} == {
        "s_conv",
        "s_hidden",
        "s_logits",
    }
    stripped = pruning.strip_pruning(distiller.student)
    assert not any(
        isinstance(layer, pruning.PruneLowMagnitude)
        for layer in stripped.layers
    )
    kernel = np.array(stripped.get_layer("s_hidden").kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    expected = stripped.predict(x, verbose=0)
    np.testing.assert_allclose(
        expected, distiller.predict(x, verbose=0), atol=1e-6
    )
    outputs = convert.run_tflite(convert.to_tflite(stripped), x)
    assert np.max(np.abs(outputs - expected)) < 1e-5


def test_pruned_student_without_callback_is_an_error():
    distiller = distillation.Distiller(
        _pruned_student(), common.teacher_model()
    )
    common.compile_distiller(distiller)
    x, y = common.data(n=16)
    with pytest.raises(RuntimeError, match="UpdatePruningStep"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_pruned_teacher_is_rejected():
    teacher = pruning.prune_low_magnitude(common.teacher_model())
    with pytest.raises(ValueError, match="strip_pruning"):
        distillation.Distiller(common.student_model(), teacher)


def test_save_and_load_student_and_distiller(tmp_path):
    teacher, student = common.teacher_model(), _pruned_student()
    x, y = common.data()
    distiller = distillation.Distiller(
        student,
        teacher,
        feature_distillations=FD("t_hidden", "s_hidden"),
        cache_teacher_outputs=True,
    )
    common.compile_distiller(distiller, alpha=0.2, temperature=4)
    callbacks = [pruning.UpdatePruningStep()]
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    expected = distiller.evaluate(x, y, verbose=0, return_dict=True)

    # The student alone: what gets stripped, converted and deployed.
    student_path = os.path.join(tmp_path, "student.keras")
    distiller.student.save(student_path)
    loaded_student = keras.saving.load_model(student_path)
    np.testing.assert_allclose(
        loaded_student.predict(x, verbose=0),
        student.predict(x, verbose=0),
        atol=1e-6,
    )

    # The whole Distiller, with its projection and compile arguments.
    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, distillation.Distiller)
    assert (loaded.alpha, loaded.temperature) == (0.2, 4.0)
    assert loaded.cache_teacher_outputs
    np.testing.assert_array_equal(
        loaded.projections[0].kernel, distiller.projections[0].kernel
    )
    results = loaded.evaluate(x, y, verbose=0, return_dict=True)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, rel=1e-5), key
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)


def test_mirrored_strategy_cached_teacher_trains_like_live(strategy):
    x, y = common.data()
    histories = []
    for cache in (False, True):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            distiller = distillation.Distiller(
                common.student_model(),
                common.teacher_model(),
                feature_distillations=FD("t_hidden", "s_hidden"),
                cache_teacher_outputs=cache,
            )
            common.compile_distiller(distiller)
        keras.utils.set_random_seed(1)
        history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
        histories.append(history.history)
    for key in ("loss", "student_loss", "distillation_loss", "feature_loss"):
        np.testing.assert_allclose(
            histories[1][key], histories[0][key], rtol=1e-4, err_msg=key
        )


def test_mirrored_strategy_default_recipe(strategy):
    # The default recipe's hint projection is made in compile(), inside the
    # scope: it is mirrored like the student, and trained.
    x, y = common.data()
    with strategy.scope():
        distiller = distillation.Distiller(
            common.student_model(), common.teacher_model()
        )
        common.compile_distiller(distiller, keras_io=False)
    (projection,) = distiller.projections
    assert isinstance(projection.kernel.value, tf.distribute.DistributedValues)
    before = np.array(projection.kernel)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["feature_loss"][0])
    assert not np.allclose(before, projection.kernel)


def test_mirrored_strategy(strategy):
    x, y = common.data()
    with strategy.scope():
        teacher, student = common.teacher_model(), common.student_model()
        distiller = distillation.Distiller(
            student, teacher, feature_distillations=FD("t_hidden", "s_hidden")
        )
        common.compile_distiller(distiller)
    assert isinstance(
        student.trainable_variables[0].value, tf.distribute.DistributedValues
    )
    teacher_before = [np.array(w) for w in teacher.get_weights()]
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert all(np.isfinite(v) for v in history.history["loss"])
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    # Per-replica loss scaling is undone in the reported values: they equal
    # the single-device loss.
    results = distiller.evaluate(
        x, y, batch_size=16, verbose=0, return_dict=True
    )
    logits = student.predict(x, verbose=0)
    expected_ce = float(common.sparse_ce()(y, logits))
    expected_kd = float(
        distillation.SoftTargetKLDivergence(3)(
            teacher.predict(x, verbose=0), logits
        )
    )
    assert results["student_loss"] == pytest.approx(expected_ce, rel=1e-4)
    assert results["distillation_loss"] == pytest.approx(expected_kd, rel=1e-4)


def test_quantization_aware_student_distills_and_converts_to_int8():
    quantization = pytest.importorskip("keras_compress.quantization")
    teacher = common.teacher_model()
    x, y = common.data()
    student = quantization.quantize_model(common.student_model())
    distiller = distillation.Distiller(
        student, teacher, feature_distillations=FD("t_hidden", "s_hidden")
    )
    common.compile_distiller(distiller)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["feature_loss"][0])
    # `distiller.student` is the QAT model: its int8 file computes the same.
    expected = distiller.student.predict(x, verbose=0)
    outputs = convert.run_tflite(
        convert.to_tflite(distiller.student, "int8"), x
    )
    assert np.mean(np.argmax(outputs, -1) == np.argmax(expected, -1)) >= 0.95
