"""`FeatureDistillation`: match an intermediate layer of teacher and student.

Differs from `keras.distillation.FeatureDistillation` in three ways that
matter for compression: a student layer narrower than the teacher's (the
usual case: the student is the small model) gets a learned projection
instead of an error or a shape-blind loss such as cosine similarity; each
term has its own weight; and a layer of a pruned student can be named by
its original name (`"dense"`, not `"prune_low_magnitude_dense"`).
"""

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
        weight = losses_lib.check_weight(weight)
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


# Layers that are the identity at inference and only add noise in training:
# a hint on their output would match the teacher's clean features against
# the student's noisy ones, so the hint looks through them.
_TRAINING_NOISE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


def classifier_features(model):
    """The layer whose output the model's last (logits) layer reads.

    That is where a student and its teacher are most comparable: both have
    reduced the input to one feature vector per sample for the same
    classifier. Dropout-like layers between the two are looked through.

    Args:
        model: A built `keras.Model`.

    Returns:
        `(layer_name, None)`, or `(None, reason)` when there is no such
        layer to read: a subclassed model, several outputs, a last layer
        without weights or with several inputs, or a features layer that is
        called more than once.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Flatten(),
        keras.layers.Dense(32, name="hidden"), keras.layers.Dropout(0.2),
        keras.layers.Dense(10)])
    kc.distillation.classifier_features(model)  # ("hidden", None)
    ```
    """
    from keras_compress import rewrite
    from keras_compress.core import keras_private

    if not rewrite.is_graph_model(model):
        return None, (
            f"'{model.name}' is a subclassed {type(model).__name__}, whose "
            "intermediate outputs cannot be read"
        )
    try:
        calls = rewrite.graph_calls(model)
    except ValueError as error:
        return None, str(error)
    if len(calls.graph.outputs) != 1:
        return None, f"'{model.name}' has {len(calls.graph.outputs)} outputs"
    classifier = keras_private.producer(calls.graph.outputs[0])
    if classifier is None or not classifier.weights:
        return None, (
            f"the last layer of '{model.name}' "
            f"('{getattr(classifier, 'name', None)}') has no weights: it is "
            "not a classifier reading features"
        )
    layer = classifier
    while True:
        node = _sole_call(calls, layer)
        if node is None or len(node.input_tensors) != 1:
            return None, (
                f"layer '{layer.name}' of '{model.name}' is called more than "
                "once or has several inputs"
            )
        layer = keras_private.producer(node.input_tensors[0])
        if layer is None or isinstance(layer, keras.layers.InputLayer):
            return None, (
                f"the classifier of '{model.name}' reads the model's input"
            )
        if not isinstance(layer, _TRAINING_NOISE):
            break
    if calls.uses.get(id(layer), 0) != 1 or isinstance(layer, keras.Model):
        return None, (
            f"the features layer '{layer.name}' of '{model.name}' is called "
            "more than once or is a nested model"
        )
    return layer.name, None


def _sole_call(calls, layer):
    found = [node for node in calls.nodes if node.operation is layer]
    return found[0] if len(found) == 1 else None
