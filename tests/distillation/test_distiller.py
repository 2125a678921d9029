"""The Distiller model: training, metrics, freezing, bad input, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compress import distillation
from tests import helpers
from tests.distillation import common


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _assert_same(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_fit_evaluate_predict_and_only_the_student_learns():
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data()
    teacher_before, student_before = _weights(teacher), _weights(student)
    distiller = common.compile_distiller(
        distillation.Distiller(student=student, teacher=teacher)
    )
    # The teacher's variables are kept out of training, without changing
    # the user's teacher object.
    assert teacher.trainable
    assert len(distiller.trainable_weights) == len(student.trainable_weights)
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in student.trainable_variables
    }

    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for key in ("loss", "acc", "student_loss", "distillation_loss"):
        assert np.isfinite(history.history[key][0]), key
    assert "feature_loss" not in history.history
    _assert_same(teacher_before, _weights(teacher))
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(student_before, _weights(student))
    )

    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    # loss = alpha * student_loss + (1 - alpha) * distillation_loss
    assert results["loss"] == pytest.approx(
        0.1 * results["student_loss"] + 0.9 * results["distillation_loss"],
        rel=1e-4,
    )
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0)
    )


def test_loss_value_matches_formula():
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data(n=16)
    distiller = common.compile_distiller(
        distillation.Distiller(student, teacher), alpha=0.3, temperature=2.0
    )
    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    expected_kd = float(distillation.SoftTargetKLDivergence(2.0)(t, s))
    expected_ce = float(common.sparse_ce()(y, s))
    results = distiller.evaluate(
        x, y, batch_size=16, verbose=0, return_dict=True
    )
    assert results["distillation_loss"] == pytest.approx(expected_kd, rel=1e-4)
    assert results["student_loss"] == pytest.approx(expected_ce, rel=1e-4)
    assert results["loss"] == pytest.approx(
        0.3 * expected_ce + 0.7 * expected_kd, rel=1e-4
    )


def test_keras_io_style_distillation_loss_fn_equals_default():
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data(n=16)
    results = []
    for loss_fn in (None, keras.losses.KLDivergence()):
        distiller = common.compile_distiller(
            distillation.Distiller(student, teacher),
            distillation_loss_fn=loss_fn,
            alpha=0.0,
            temperature=4,
        )
        results.append(distiller.evaluate(x, y, batch_size=16, verbose=0))
    assert results[0] == pytest.approx(results[1], rel=1e-3)


def test_alpha_one_and_zero():
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data(n=16)
    distiller = common.compile_distiller(
        distillation.Distiller(student, teacher), alpha=1.0
    )
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(results["student_loss"], rel=1e-5)
    # alpha=0 needs no labels and no student loss.
    distiller = distillation.Distiller(student, teacher)
    distiller.compile(optimizer="adam", alpha=0.0)
    results = distiller.evaluate(x, verbose=0, return_dict=True)
    assert results["student_loss"] == 0.0
    assert results["loss"] == pytest.approx(results["distillation_loss"])


def test_student_runs_once_per_step_with_features():
    calls = []

    class Count(keras.layers.Layer):
        def call(self, inputs):
            calls.append(1)
            return inputs

    inputs = keras.Input(common.INPUT_SHAPE)
    hidden = keras.layers.Flatten()(Count()(inputs))
    hidden = keras.layers.Dense(8, name="s_hidden")(hidden)
    student = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    distiller = distillation.Distiller(
        student,
        common.teacher_model(),
        feature_distillations=distillation.FeatureDistillation(
            "t_hidden", "s_hidden"
        ),
    )
    common.compile_distiller(distiller, run_eagerly=True)
    x, y = common.data(n=32)
    del calls[:]
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert len(calls) == 2  # two steps, one student forward pass each


def test_subclassed_student():
    teacher = helpers.functional_mlp()
    student = helpers.subclassed_mlp()
    x, y = helpers.make_data((16,), 3)
    distiller = common.compile_distiller(
        distillation.Distiller(student, teacher)
    )
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert results["loss"] == pytest.approx(
        0.1 * results["student_loss"] + 0.9 * results["distillation_loss"],
        rel=1e-4,
    )


def test_regularization_losses_of_the_student_count():
    teacher = common.teacher_model()
    inputs = keras.Input(common.INPUT_SHAPE)
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(
        3, kernel_regularizer=keras.regularizers.L2(10.0)
    )(flat)
    student = keras.Model(inputs, outputs)
    x, y = common.data(n=16)
    distiller = common.compile_distiller(
        distillation.Distiller(student, teacher)
    )
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    penalty = 10.0 * float(np.sum(np.square(student.layers[-1].kernel)))
    assert results["loss"] == pytest.approx(
        0.1 * results["student_loss"]
        + 0.9 * results["distillation_loss"]
        + penalty,
        rel=1e-4,
    )


# Bad input.


def test_incompatible_output_shapes():
    teacher = common.teacher_model()
    inputs = keras.Input(common.INPUT_SHAPE)
    student = keras.Model(
        inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs))
    )
    with pytest.raises(ValueError, match=r"\(None, 3\).*\(None, 5\)"):
        distillation.Distiller(student, teacher)


def test_incompatible_subclassed_output_shape():
    teacher = helpers.functional_mlp(num_classes=3)
    student = helpers.SubclassedMLP(num_classes=4)
    student(np.zeros((1, 16), "float32"))
    with pytest.raises(ValueError, match="outputs"):
        distillation.Distiller(student, teacher)


def test_bad_alpha_and_temperature():
    distiller = distillation.Distiller(
        common.student_model(), common.teacher_model()
    )
    for alpha in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=f"alpha={alpha!r}"):
            common.compile_distiller(distiller, alpha=alpha)
    for temperature in (0, -2.0, float("inf")):
        with pytest.raises(ValueError, match=f"temperature={temperature}"):
            common.compile_distiller(distiller, temperature=temperature)


def test_bad_compile_arguments():
    distiller = distillation.Distiller(
        common.student_model(), common.teacher_model()
    )
    with pytest.raises(ValueError, match="student_loss_fn"):
        distiller.compile(optimizer="adam", student_loss_fn=None)
    with pytest.raises(ValueError, match="either"):
        distiller.compile(optimizer="adam", student_loss_fn="mse", loss="mse")
    with pytest.raises(ValueError, match="temperature=5"):
        common.compile_distiller(
            distiller,
            distillation_loss_fn=distillation.SoftTargetKLDivergence(5),
            temperature=3,
        )


def test_bad_models():
    teacher = common.teacher_model()
    with pytest.raises(ValueError, match="student"):
        distillation.Distiller(keras.layers.Dense(3), teacher)
    with pytest.raises(ValueError, match="same model"):
        distillation.Distiller(teacher, teacher)
    with pytest.raises(ValueError, match="not been built"):
        distillation.Distiller(helpers.SubclassedMLP(num_classes=3), teacher)


def test_training_needs_compile_and_labels():
    distiller = distillation.Distiller(
        common.student_model(), common.teacher_model()
    )
    x, y = common.data(n=16)
    with pytest.raises(ValueError, match="compile"):
        distiller.fit(x, y, verbose=0)
    common.compile_distiller(distiller)
    with pytest.raises(ValueError, match="labels"):
        distiller.fit(x, verbose=0)


class CountingTeacher(keras.Model):
    """A subclassed teacher that counts its forward passes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = common.teacher_model()
        self.calls = 0

    def call(self, inputs, training=None):
        self.calls += 1
        return self.inner(inputs, training=training)


def _cached_run(cache, x, y, **fit_kwargs):
    keras.utils.set_random_seed(1)
    teacher, student = common.teacher_model(), common.student_model()
    features = distillation.FeatureDistillation("t_hidden", "s_hidden")
    distiller = common.compile_distiller(
        distillation.Distiller(
            student,
            teacher,
            feature_distillations=features,
            cache_teacher_outputs=cache,
        ),
        alpha=0.5,
    )
    keras.utils.set_random_seed(2)
    history = distiller.fit(x, y, batch_size=16, verbose=0, **fit_kwargs)
    return history.history, _weights(student)


def test_cached_teacher_outputs_train_like_live_ones():
    keras.utils.set_random_seed(0)
    x, y = common.data(n=64)
    live_history, live_weights = _cached_run(False, x, y, epochs=2)
    cached_history, cached_weights = _cached_run(True, x, y, epochs=2)
    for key in ("loss", "student_loss", "distillation_loss", "feature_loss"):
        np.testing.assert_allclose(
            cached_history[key], live_history[key], rtol=1e-4, err_msg=key
        )
    for live, cached in zip(live_weights, cached_weights):
        np.testing.assert_allclose(cached, live, atol=1e-5)
    # Metrics see the labels, not the cache: same accuracy both ways.
    assert cached_history["acc"] == live_history["acc"]


def test_cached_teacher_outputs_with_sample_weights():
    keras.utils.set_random_seed(0)
    x, y = common.data(n=64)
    weights = np.random.default_rng(3).uniform(0.0, 2.0, size=len(x))
    kwargs = dict(epochs=1, sample_weight=weights, validation_split=0.25)
    live_history, live_weights = _cached_run(False, x, y, **kwargs)
    cached_history, cached_weights = _cached_run(True, x, y, **kwargs)
    for key in ("loss", "student_loss", "val_loss", "acc", "val_acc"):
        np.testing.assert_allclose(
            cached_history[key], live_history[key], rtol=1e-4, err_msg=key
        )
    for live, cached in zip(live_weights, cached_weights):
        np.testing.assert_allclose(cached, live, atol=1e-5)


def test_cached_teacher_runs_once_over_the_data():
    teacher = CountingTeacher()
    teacher(np.zeros((1, *common.INPUT_SHAPE), "float32"))
    teacher.compile(run_eagerly=True)  # predict() counts every batch
    distiller = common.compile_distiller(
        distillation.Distiller(
            common.student_model(), teacher, cache_teacher_outputs=True
        ),
        run_eagerly=True,
    )
    x, y = common.data(n=64)
    teacher.calls = 0
    distiller.fit(x, y, batch_size=16, epochs=3, verbose=0)
    # A one-sample size probe, then predict() at the training batch size
    # (4 batches of 16); none per step.
    assert teacher.calls == 1 + 4
    # A validation split is cut from the cached arrays too ...
    teacher.calls = 0
    distiller.fit(
        x, y, batch_size=16, epochs=1, validation_split=0.25, verbose=0
    )
    assert teacher.calls == 1 + 4
    # ... separate validation data is not cached: one batch, one pass.
    teacher.calls = 0
    distiller.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        validation_data=(x[:16], y[:16]),
        verbose=0,
    )
    assert teacher.calls == 1 + 4 + 1


def test_cached_teacher_outputs_without_labels():
    x, _ = common.data(n=32)
    distiller = distillation.Distiller(
        common.student_model(),
        common.teacher_model(),
        cache_teacher_outputs=True,
    )
    distiller.compile(optimizer="adam", alpha=0.0)
    history = distiller.fit(x, batch_size=16, epochs=1, verbose=0)
    assert history.history["distillation_loss"][0] > 0


def test_cache_teacher_outputs_bad_input():
    teacher, student = common.teacher_model(), common.student_model()
    with pytest.raises(ValueError, match="cache_teacher_outputs"):
        distillation.Distiller(student, teacher, cache_teacher_outputs="yes")
    distiller = common.compile_distiller(
        distillation.Distiller(student, teacher, cache_teacher_outputs=True)
    )
    x, y = common.data(n=32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(ValueError, match="needs `x` \\(and `y`\\) as arrays"):
        distiller.fit(dataset, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="class_weight"):
        distiller.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)


# The default recipe.


def _default(distiller, **kwargs):
    return common.compile_distiller(distiller, keras_io=False, **kwargs)


def test_default_recipe_is_correlation_plus_a_classifier_hint():
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data(n=32)
    distiller = _default(distillation.Distiller(student, teacher))
    recipe = distiller.recipe
    assert recipe["name"] == "default"
    assert (recipe["alpha"], recipe["temperature"]) == (0.5, 1.0)
    assert recipe["distillation_loss"] == "CorrelationDistillation"
    assert recipe["automatic_hint"] == "t_hidden->s_hidden"
    assert recipe["feature_distillations"] == [
        "t_hidden->s_hidden (mse, weight 0.5)"
    ]
    (projection,) = distiller.projections
    assert projection.units == 16  # the teacher's width; the student has 8

    results = distiller.evaluate(
        x, y, batch_size=32, verbose=0, return_dict=True
    )
    teacher_logits = teacher.predict(x, verbose=0)
    student_logits = student.predict(x, verbose=0)
    expected_kd = float(
        distillation.CorrelationDistillation(1.0)(
            teacher_logits, student_logits
        )
    )
    projected = keras.ops.convert_to_numpy(
        projection(common.layer_output(student, "s_hidden", x))
    )
    expected_hint = 0.5 * np.mean(
        (common.layer_output(teacher, "t_hidden", x) - projected) ** 2
    )
    assert results["distillation_loss"] == pytest.approx(expected_kd, rel=1e-4)
    assert results["feature_loss"] == pytest.approx(expected_hint, rel=1e-4)
    assert results["loss"] == pytest.approx(
        0.5 * results["student_loss"]
        + 0.5 * results["distillation_loss"]
        + results["feature_loss"],
        rel=1e-4,
    )
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert (
        history.history["feature_loss"][1] < history.history["feature_loss"][0]
    )


def test_keras_io_arguments_keep_the_keras_io_loss():
    teacher, student = common.teacher_model(), common.student_model()
    for arguments, expected in (
        ({"alpha": 0.3}, (0.3, 3.0)),
        ({"temperature": 5}, (0.1, 5.0)),
        (
            {"distillation_loss_fn": distillation.SoftTargetKLDivergence(2)},
            (0.1, 2.0),
        ),
    ):
        distiller = _default(
            distillation.Distiller(student, teacher), **arguments
        )
        recipe = distiller.recipe
        assert recipe["name"] == "keras.io", arguments
        assert (recipe["alpha"], recipe["temperature"]) == expected
        assert recipe["distillation_loss"] == "SoftTargetKLDivergence"
        assert recipe["automatic_hint"] is None
        assert distiller.projections == []
        x, y = common.data(n=16)
        results = distiller.evaluate(x, y, verbose=0, return_dict=True)
        assert "feature_loss" not in results


def test_default_recipe_keeps_the_users_feature_terms():
    teacher, student = common.teacher_model(), common.student_model()
    none = _default(
        distillation.Distiller(student, teacher, feature_distillations=[])
    )
    assert none.recipe["automatic_hint"] is None
    assert none.recipe["feature_distillations"] == []
    own = _default(
        distillation.Distiller(
            student,
            teacher,
            feature_distillations=distillation.FeatureDistillation(
                "t_conv", "s_conv", weight=2.0
            ),
        )
    )
    assert own.recipe["feature_distillations"] == [
        "t_conv->s_conv (mse, weight 2)"
    ]


def test_default_recipe_without_readable_features():
    teacher = helpers.functional_mlp()
    student = helpers.subclassed_mlp()
    x, y = helpers.make_data((16,), 3)
    distiller = _default(distillation.Distiller(student, teacher))
    assert distiller.recipe["automatic_hint"] is None
    assert "subclassed" in distiller.recipe["no_automatic_hint"]
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "feature_loss" not in history.history


def test_recompiling_keeps_the_hint_projection():
    distiller = _default(
        distillation.Distiller(common.student_model(), common.teacher_model())
    )
    (projection,) = distiller.projections
    x, y = common.data(n=16)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    trained = np.array(projection.kernel)
    common.compile_distiller(distiller)  # keras.io: the hint goes
    assert distiller.projections == []
    _default(distiller)  # and comes back, with what it learned
    assert distiller.projections[0] is projection
    np.testing.assert_array_equal(distiller.projections[0].kernel, trained)


def test_default_recipe_saves_and_loads(tmp_path):
    x, y = common.data(n=32)
    distiller = _default(
        distillation.Distiller(common.student_model(), common.teacher_model())
    )
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.recipe == distiller.recipe
    np.testing.assert_allclose(
        loaded.projections[0].kernel, distiller.projections[0].kernel
    )
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    after = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)


# Augmentation: the teacher sees what the student sees.


def test_augmented_batches_reach_teacher_and_student():
    # A student equal to its teacher and not trained (learning rate 0):
    # their logits, and so the distillation loss, are equal only if both
    # see the same augmented inputs in every step.
    teacher = common.teacher_model()
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    distiller = distillation.Distiller(
        student,
        teacher,
        augmentation=keras.layers.GaussianNoise(1.0, seed=1),
    )
    common.compile_distiller(distiller, alpha=0.5, temperature=1)
    distiller.optimizer.learning_rate = 0.0
    x, y = common.data(n=64)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.history["distillation_loss"][0] < 1e-6
    # The augmentation ran in training (the labels' loss differs from that
    # on the clean data) and not in evaluation.
    clean = float(common.sparse_ce()(y, student.predict(x, verbose=0)))
    assert abs(history.history["student_loss"][0] - clean) > 1e-3
    results = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert results["student_loss"] == pytest.approx(clean, rel=1e-4)


def test_bad_augmentation():
    teacher, student = common.teacher_model(), common.student_model()
    with pytest.raises(ValueError, match="`augmentation` must be a keras"):
        distillation.Distiller(student, teacher, augmentation=lambda x: x)
    with pytest.raises(ValueError, match="cannot be combined"):
        distillation.Distiller(
            student,
            teacher,
            augmentation=keras.layers.GaussianNoise(0.5),
            cache_teacher_outputs=True,
        )
