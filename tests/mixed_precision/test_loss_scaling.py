"""Loss scaling for float16, alone and in a Distiller."""

import keras
import numpy as np

from keras_compress import distillation
from keras_compress import mixed_precision
from tests import helpers


def test_loss_scale_optimizer_only_for_float16():
    wrapped = mixed_precision.loss_scale_optimizer("adam", "mixed_float16")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert mixed_precision.loss_scale_optimizer(wrapped) is wrapped
    for policy in ("float32", "mixed_bfloat16"):
        optimizer = keras.optimizers.SGD()
        assert mixed_precision.loss_scale_optimizer(optimizer, policy) is (
            optimizer
        )
    with mixed_precision.policy_scope("mixed_float16"):
        assert isinstance(
            mixed_precision.loss_scale_optimizer("sgd"),
            keras.optimizers.LossScaleOptimizer,
        )
    model = helpers.functional_mlp()
    assert not mixed_precision.needs_loss_scaling(model)
    half = mixed_precision.apply_policy(model, "mixed_float16")
    assert mixed_precision.needs_loss_scaling(half)
    assert isinstance(
        mixed_precision.loss_scale_optimizer("adam", half),
        keras.optimizers.LossScaleOptimizer,
    )


def test_mixed_float16_trains_without_nan():
    model, x, y = helpers.make_model("functional")
    half = mixed_precision.apply_policy(model, "mixed_float16")
    assert half.get_layer("fc1").compute_dtype == "float16"
    assert half.get_layer("logits").compute_dtype == "float32"
    helpers.compile_for_test(half)
    # Keras wraps the optimizer because the copy's own policy is float16.
    assert isinstance(half.optimizer, keras.optimizers.LossScaleOptimizer)
    history = half.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    for weight in half.get_weights():
        assert np.all(np.isfinite(weight))
    assert float(half.optimizer.dynamic_scale) > 1.0


def test_distiller_with_float16_student_scales_the_loss():
    teacher, x, y = helpers.make_model("functional")
    student = mixed_precision.apply_policy(
        helpers.functional_mlp(), "mixed_float16"
    )
    distiller = distillation.Distiller(student, teacher)
    distiller.compile(
        optimizer="adam",
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        ),
    )
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["distillation_loss"][0])
