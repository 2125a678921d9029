"""Feature distillation: named layers, projections, weights, errors."""

import keras
import numpy as np
import pytest

from keras_compress import distillation
from keras_compress.distillation import distiller as distiller_lib
from tests import helpers
from tests.distillation import common

FD = distillation.FeatureDistillation


def test_feature_loss_value_with_projection():
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data(n=16)
    distiller = distillation.Distiller(
        student,
        teacher,
        feature_distillations=[
            FD("t_hidden", "s_hidden", weight=0.5),  # 16 vs 8: projected
            FD("t_conv", "s_conv", loss="mae", weight=2.0),  # 6 vs 3
            FD(None, None, weight=0.25),  # MSE between the logits
        ],
    )
    projections = distiller.projections
    assert [p.units for p in projections[:2]] == [16, 6]
    assert projections[2] is None
    common.compile_distiller(distiller)
    results = distiller.evaluate(
        x, y, batch_size=16, verbose=0, return_dict=True
    )

    features = common.layer_output

    def project(layer, values):
        return keras.ops.convert_to_numpy(layer(values))

    hidden = np.mean(
        (
            features(teacher, "t_hidden", x)
            - project(projections[0], features(student, "s_hidden", x))
        )
        ** 2
    )
    conv = np.mean(
        np.abs(
            features(teacher, "t_conv", x)
            - project(projections[1], features(student, "s_conv", x))
        )
    )
    logits = np.mean(
        (teacher.predict(x, verbose=0) - student.predict(x, verbose=0)) ** 2
    )
    expected = 0.5 * hidden + 2.0 * conv + 0.25 * logits
    assert results["feature_loss"] == pytest.approx(expected, rel=1e-4)
    assert results["loss"] == pytest.approx(
        0.1 * results["student_loss"]
        + 0.9 * results["distillation_loss"]
        + expected,
        rel=1e-4,
    )


def test_feature_distillation_trains_projection_not_teacher(monkeypatch):
    teacher, student = common.teacher_model(), common.student_model()
    x, y = common.data()
    teacher_before = [np.array(w) for w in teacher.get_weights()]
    distiller = distillation.Distiller(
        student, teacher, feature_distillations=FD("t_hidden", "s_hidden")
    )
    projection_before = np.array(distiller.projections[0].kernel)
    # In compiled (graph) training too, the features come from the same
    # forward pass as the prediction: the student is not run twice.
    reused = []
    original = distiller_lib.Distiller._student_pass

    def spy(self, x, y_pred, training):
        pending = self._pending.value
        reused.append(pending is not None and pending[0] is y_pred)
        return original(self, x, y_pred, training)

    monkeypatch.setattr(distiller_lib.Distiller, "_student_pass", spy)
    common.compile_distiller(distiller)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert reused and all(reused)
    losses = history.history["feature_loss"]
    assert losses[1] < losses[0]
    assert not np.allclose(projection_before, distiller.projections[0].kernel)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    # The student keeps its own architecture: no projection inside it.
    assert len(student.layers) == 6


def test_equal_widths_have_no_projection_unless_asked():
    teacher = common.teacher_model()
    student = common.student_model(hidden=16)
    auto = distillation.Distiller(
        student, teacher, feature_distillations=FD("t_hidden", "s_hidden")
    )
    assert auto.projections == [None]
    always = distillation.Distiller(
        student,
        teacher,
        feature_distillations=FD("t_hidden", "s_hidden", projection="always"),
    )
    assert always.projections[0].units == 16


def test_unknown_layer_names():
    teacher, student = common.teacher_model(), common.student_model()
    with pytest.raises(
        ValueError, match="teacher 'teacher' has no layer.*nope"
    ):
        distillation.Distiller(
            student, teacher, feature_distillations=FD("nope", "s_hidden")
        )
    with pytest.raises(
        ValueError, match="student 'student' has no layer.*gone"
    ):
        distillation.Distiller(
            student, teacher, feature_distillations=FD("t_hidden", "gone")
        )


def test_incompatible_feature_shapes():
    teacher, student = common.teacher_model(), common.student_model()
    # A conv map (6, 6, 6) against a vector (8,): ranks differ.
    with pytest.raises(ValueError, match=r"\(None, 6, 6, 6\).*\(None, 8\)"):
        distillation.Distiller(
            student, teacher, feature_distillations=FD("t_conv", "s_hidden")
        )
    with pytest.raises(ValueError, match="projection='never'"):
        distillation.Distiller(
            student,
            teacher,
            feature_distillations=FD(
                "t_hidden", "s_hidden", projection="never"
            ),
        )


def test_subclassed_model_with_named_layer():
    teacher = helpers.functional_mlp()
    student = helpers.subclassed_mlp()
    with pytest.raises(ValueError, match="subclassed"):
        distillation.Distiller(
            student, teacher, feature_distillations=FD("fc1", "dense")
        )


def test_bad_feature_arguments():
    for kwargs, match in [
        ({"weight": -1.0}, "weight=-1.0"),
        ({"projection": "sometimes"}, "projection='sometimes'"),
        ({"teacher_layer": 3}, "teacher_layer=3"),
        ({"loss": "no_such_loss"}, "no_such_loss"),
    ]:
        with pytest.raises(ValueError, match=match):
            FD(**kwargs)
    with pytest.raises(ValueError, match="FeatureDistillation"):
        distillation.Distiller(
            common.student_model(),
            common.teacher_model(),
            feature_distillations=["t_hidden"],
        )


def test_config_round_trip():
    term = FD("a", "b", loss=keras.losses.CosineSimilarity(), weight=0.3)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(term)
    )
    assert isinstance(restored, FD)
    assert (restored.teacher_layer, restored.student_layer) == ("a", "b")
    assert restored.weight == 0.3
    assert isinstance(restored.loss_fn, keras.losses.CosineSimilarity)


# classifier_features: the layer the default recipe's hint reads.


def test_classifier_features_of_each_model_kind():
    find = distillation.classifier_features
    assert find(common.teacher_model()) == ("t_hidden", None)
    assert find(common.student_model()) == ("s_hidden", None)
    # Dropout between the features and the classifier is looked through.
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    dropped = keras.layers.Dropout(0.5)(hidden)
    dropped = keras.layers.GaussianNoise(0.1)(dropped)
    model = keras.Model(inputs, keras.layers.Dense(3)(dropped))
    assert find(model) == ("hidden", None)


def test_classifier_features_that_cannot_be_read():
    find = distillation.classifier_features
    subclassed = helpers.subclassed_mlp()
    name, reason = find(subclassed)
    assert name is None and "subclassed" in reason
    # The classifier reads the input: no features to match.
    linear = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert find(linear)[0] is None
    # A last layer without weights (a softmax) is not a classifier.
    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3)(keras.layers.Dense(8)(inputs))
    probs = keras.Model(inputs, keras.layers.Softmax(name="probs")(logits))
    name, reason = find(probs)
    assert name is None and "'probs'" in reason
    # Features from a layer called twice (shared) are ambiguous.
    shared = keras.layers.Dense(4, name="shared")
    x = shared(shared(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    name, reason = find(model)
    assert name is None and "shared" in reason
