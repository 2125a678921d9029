"""Distillation losses: Hinton et al.'s soft-target KL, and DIST's correlations.

Why not `keras.distillation.LogitsDistillation`: with its default
`loss="kl_divergence"` the string resolves to the plain function
`keras.losses.kl_divergence`, which `LogitsDistillation` then applies to the
temperature-scaled *logits* (only a `keras.losses.KLDivergence` instance gets
the softmax and the T² factor). For teacher logits [2, 0, -1], student
[0, 1, 0] and T=3 it returns 10.48 where the distillation loss is 1.10, and
on the reference workload the student it trains is worse than one trained
alone. The loss here always compares softened probabilities and includes T².
"""

import math

import keras
from keras import ops

from keras_compress.core import keras_private

# `keras_private.LossFunctionWrapper` is what `model.compile(loss="mse")`
# itself uses to give a plain loss function sample weights, reduction and
# the per-replica scaling of `tf.distribute`; Keras does not export it.

_PACKAGE = "keras_compress"


def check_temperature(temperature, argument="temperature"):
    """Raises a ValueError unless `temperature` is a finite number > 0."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            f"`{argument}` must be a finite number > 0 (typically 1 to 10); "
            f"received {argument}={temperature!r}."
        )
    return float(temperature)


def check_weight(weight, argument="weight"):
    """Returns `weight` as a float; a ValueError unless finite and >= 0."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(
            f"`{argument}` must be a finite number >= 0; received "
            f"{argument}={weight!r}."
        )
    return float(weight)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def soft_target_kl_divergence(teacher_logits, student_logits, temperature=3.0):
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), per sample.

    Computed from `log_softmax` (no clipping of probabilities, unlike
    `keras.losses.kl_divergence`), in the dtype of the inputs: cast them to
    float32 first when they come from a mixed-precision model (the
    `SoftTargetKLDivergence` loss does this).

    Args:
        teacher_logits: Teacher logits, shape `(..., num_classes)`.
        student_logits: Student logits, same shape.
        temperature: Softening temperature `T` > 0.

    Returns:
        The loss of each sample, shape `teacher_logits.shape[:-1]`.

    Example:

    >>> soft_target_kl_divergence([[2.0, 0.0, -1.0]], [[0.0, 1.0, 0.0]], 3.0)
    ... # ≈ [1.0986]
    """
    teacher_logits = ops.convert_to_tensor(teacher_logits)
    student_logits = ops.convert_to_tensor(student_logits)
    teacher_log_p = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(
        ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1
    )
    # The T² factor keeps the gradient scale independent of T (Hinton et al.
    # 2015), so `alpha` means the same at every temperature.
    return kl * (temperature**2)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftTargetKLDivergence(keras.losses.Loss):
    """Knowledge-distillation loss between teacher and student logits.

    `loss = T² · KL(softmax(y_true / T) ‖ softmax(y_pred / T))`, with the
    teacher's logits as `y_true` and the student's logits as `y_pred`.
    This is the default distillation loss of `Distiller`. It also works in a
    plain `model.compile(loss=...)` when the targets are teacher logits
    computed beforehand (e.g. with `teacher.predict(x)`), which saves the
    teacher's forward pass in every epoch.

    Args:
        temperature: Softening temperature `T` > 0. Defaults to 3.
        reduction: Keras loss reduction. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation. Defaults to float32 (Keras's
            `floatx()`), also for mixed-precision models: a softmax over
            bfloat16 logits loses most of the small probabilities that
            distillation is about.

    Example:

    ```python
    loss = kc.distillation.SoftTargetKLDivergence(temperature=3)
    loss([[2.0, 0.0, -1.0]], [[0.0, 1.0, 0.0]])  # 1.0986
    ```
    """

    def __init__(
        self,
        temperature=3.0,
        reduction="sum_over_batch_size",
        name="soft_target_kl_divergence",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_temperature(temperature)

    def call(self, y_true, y_pred):
        return soft_target_kl_divergence(y_true, y_pred, self.temperature)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config


def _pearson(a, b, axis):
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norms = ops.sqrt(ops.sum(a * a, axis=axis) * ops.sum(b * b, axis=axis))
    return ops.sum(a * b, axis=axis) / (norms + 1e-8)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CorrelationDistillation(keras.losses.Loss):
    """DIST: match how the teacher ranks the classes, not its probabilities.

    Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS
    2022). With `p = softmax(logits / T)` of each model,

        loss = T² · (inter_weight · (1 - pearson(p_student, p_teacher))
                     + intra_weight · intra)

    where the first Pearson correlation is over each sample's classes
    (inter-class relation) and `intra` is the mean over classes of
    `1 - pearson` over the samples of the batch (intra-class relation).
    A correlation is unchanged by a shift and a scale of the student's
    probabilities, so a small student is not pushed to copy the teacher's
    exact confidence, only its ranking: on the reference workload's short
    schedules that is what helped, where T² · KL slowed the fit to the
    labels (docs/distillation.md).

    The intra-class term is one value per batch, given to every sample of
    it; sample weights scale the inter-class term of their sample and that
    shared value.

    Args:
        temperature: Softening temperature `T` > 0. Defaults to 1.
        inter_weight: Weight of the per-sample (inter-class) term.
        intra_weight: Weight of the per-batch (intra-class) term.
        reduction: Keras loss reduction. Defaults to
            `"sum_over_batch_size"`.
        name: Name of the loss.
        dtype: Dtype of the computation; float32 by default, also for
            mixed-precision students.

    Example:

    ```python
    loss = kc.distillation.CorrelationDistillation()
    loss(teacher_logits, student_logits)
    ```
    """

    def __init__(
        self,
        temperature=1.0,
        inter_weight=1.0,
        intra_weight=1.0,
        reduction="sum_over_batch_size",
        name="correlation_distillation",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_temperature(temperature)
        self.inter_weight = check_weight(inter_weight, "inter_weight")
        self.intra_weight = check_weight(intra_weight, "intra_weight")

    def call(self, y_true, y_pred):
        temperature = self.temperature
        teacher = ops.softmax(y_true / temperature, axis=-1)
        student = ops.softmax(y_pred / temperature, axis=-1)
        inter = 1.0 - _pearson(student, teacher, axis=-1)
        # Over the samples of the batch, per class (all leading axes).
        classes = ops.shape(teacher)[-1]
        flat_teacher = ops.reshape(teacher, (-1, classes))
        flat_student = ops.reshape(student, (-1, classes))
        intra = ops.mean(1.0 - _pearson(flat_student, flat_teacher, axis=0))
        loss = self.inter_weight * inter + self.intra_weight * intra
        return loss * (temperature**2)

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature,
            inter_weight=self.inter_weight,
            intra_weight=self.intra_weight,
        )
        return config


def get_loss(identifier, argument):
    """Returns a `keras.losses.Loss` for a name, function or Loss instance.

    Plain functions (also what `keras.losses.get("mse")` returns) are
    wrapped so that every loss takes `sample_weight`, reduces to a scalar
    and is scaled per replica under `tf.distribute` the same way.

    Args:
        identifier: A loss name (`"mse"`), a Keras loss, or a callable
            `fn(y_true, y_pred)` returning per-sample values.
        argument: Argument name used in error messages.

    Returns:
        A `keras.losses.Loss`.
    """
    loss = identifier
    if isinstance(identifier, (str, dict)):
        try:
            loss = keras.losses.get(identifier)
        except ValueError as error:
            raise ValueError(
                f"`{argument}`={identifier!r} is not a known Keras loss. Use a "
                "name such as 'mse' or 'kl_divergence', a keras.losses.Loss, "
                "or a callable fn(y_true, y_pred)."
            ) from error
    if isinstance(loss, keras.losses.Loss):
        return loss
    if callable(loss):
        return keras_private.LossFunctionWrapper(
            loss, name=getattr(loss, "__name__", None)
        )
    raise ValueError(
        f"`{argument}` must be a loss name, a keras.losses.Loss or a callable "
        f"fn(y_true, y_pred); received {identifier!r}."
    )


# The losses that take logits and apply their own temperature.
LOGITS_LOSSES = (SoftTargetKLDivergence, CorrelationDistillation)
