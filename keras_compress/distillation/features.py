"""`FeatureDistillation`: match an intermediate layer of teacher and student.

Differs from `keras.distillation.FeatureDistillation` in three ways that
matter for compression: a student layer narrower than the teacher's (the
usual case: the student is the small model) gets a learned projection
instead of an error or a shape-blind loss such as cosine similarity; each
term has its own weight; and a layer of a pruned student can be named by
its original name (`"dense"`, not `"prune_low_magnitude_dense"`).
"""

import math

import keras

from keras_compress.distillation import losses as losses_lib

_PACKAGE = "keras_compress"
_PROJECTIONS = ("auto", "always", "never")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FeatureDistillation:
    """One feature-matching term of a `Distiller`'s loss.

    The term is `weight * loss(teacher_features, project(student_features))`
    where the features are the outputs of the named layers (the models'
    outputs when a name is `None`). The teacher's features are constants;
    the projection, when there is one, is a `Dense` layer over the last
    (channel) axis, trained with the student and dropped with the
    Distiller: `distiller.student` has no extra layers.

    Args:
        teacher_layer: Name of a layer of the teacher (of its top level:
            layers of nested models are not reachable), or `None` for the
            teacher's output.
        student_layer: Name of a layer of the student, or `None` for its
            output. For a pruned student, the name of the layer before
            pruning works too.
        loss: Loss between the two features: a name (`"mse"`, `"mae"`,
            `"cosine_similarity"`, ...), a `keras.losses.Loss` or a
            callable `fn(teacher, student)`. Defaults to `"mse"`.
        weight: Weight of this term in the total loss (>= 0).
        projection: `"auto"` (learn a projection only when the channel
            widths differ), `"always"` or `"never"` (the widths must match).

    Example:

    ```python
    distiller = kc.distillation.Distiller(
        student, teacher,
        feature_distillations=[
            kc.distillation.FeatureDistillation(
                "teacher_hidden", "student_hidden", weight=0.5),
        ],
    )
    ```
    """

    def __init__(
        self,
        teacher_layer=None,
        student_layer=None,
        loss="mse",
        weight=1.0,
        projection="auto",
    ):
        for argument, value in (
            ("teacher_layer", teacher_layer),
            ("student_layer", student_layer),
        ):
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"`{argument}` must be a layer name (str) or None; "
                    f"received {argument}={value!r}."
                )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(
                f"`weight` must be a finite number >= 0; received "
                f"weight={weight!r}."
            )
        if projection not in _PROJECTIONS:
            raise ValueError(
                f"`projection` must be one of {_PROJECTIONS}; received "
                f"projection={projection!r}."
            )
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.loss = loss
        self.loss_fn = losses_lib.get_loss(loss, "loss")
        self.weight = float(weight)
        self.projection = projection

    @property
    def name(self):
        """A readable name for the term, e.g. `"dense_2->dense_1"`."""
        teacher = self.teacher_layer or "output"
        student = self.student_layer or "output"
        return f"{teacher}->{student}"

    def __repr__(self):
        return (
            f"FeatureDistillation(teacher_layer={self.teacher_layer!r}, "
            f"student_layer={self.student_layer!r}, loss={self.loss!r}, "
            f"weight={self.weight}, projection={self.projection!r})"
        )

    def get_config(self):
        loss = self.loss
        if not isinstance(loss, str):
            loss = keras.saving.serialize_keras_object(loss)
        return {
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "loss": loss,
            "weight": self.weight,
            "projection": self.projection,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
