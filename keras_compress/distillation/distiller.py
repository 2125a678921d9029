"""`Distiller`: a `keras.Model` that trains a student to imitate a teacher.

The API is that of the keras.io "Knowledge Distillation" example
(`Distiller(student, teacher)`, `compile(optimizer, metrics,
student_loss_fn, distillation_loss_fn, alpha, temperature)`), which is what
most users know. It is built like Keras 3's `keras.distillation.Distiller`
(a `Model` overriding `call` and `compute_loss`, so `fit`, `evaluate`,
`predict`, callbacks and `tf.distribute` work unchanged) but is not a
subclass of it, because most of what that class does has to differ here:

- its default logits loss compares temperature-scaled logits, not softened
  probabilities (see `losses.py`); ours, with the keras.io arguments, is
  T² · KL on probabilities, and without them a default recipe (the DIST
  correlation loss and an automatic feature hint) that beat the student
  trained alone on average in docs/distillation.md's benchmark;
- it freezes the teacher by setting `teacher.trainable = False` on the
  user's model; ours leaves the teacher object alone and only keeps its
  variables out of the trainable set;
- with feature distillation it runs the student twice per step (once for
  the prediction, once for the features); ours runs it once;
- it has no projection between features of different widths, and drops the
  student's regularization losses (`compute_loss` ignores `self.losses`).
"""

import math

import keras
import numpy as np
from keras import ops

# The per-replica loss scaling Keras applies under `tf.distribute` (every
# `keras.losses.Loss` divides by the number of replicas); Keras does not
# export the inverse, which the loss trackers need to report true values.
from keras_compress import rewrite
from keras_compress.core import keras_private
from keras_compress.core import training
from keras_compress.distillation import features as features_lib
from keras_compress.distillation import losses as losses_lib
from keras_compress.mixed_precision import loss_scaling
from keras_compress.pruning import prune_api

_PACKAGE = "keras_compress"

# The default recipe of `compile()` (no alpha, temperature or loss given),
# chosen on a validation split of the reference workload
# (benchmarks/distillation_recipe_sweep.py, docs/distillation.md).
DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 1.0
DEFAULT_HINT_WEIGHT = 0.5
# The keras.io example's values, used when any keras.io argument is given.
KERAS_IO_ALPHA = 0.1
KERAS_IO_TEMPERATURE = 3.0


class _Slot:
    """A holder that Keras's attribute tracking leaves alone."""

    def __init__(self, value=None):
        self.value = value


# `fit(..., cache_teacher_outputs)` passes the teacher's outputs through
# Keras's data pipeline inside `y`, under this key.
_CACHE_KEY = "_kc_teacher_outputs"
_MAX_CACHE_BYTES = 4 * 2**30


def _is_cached(value):
    return isinstance(value, dict) and _CACHE_KEY in value


def _split_teacher_cache(y, sample_weight=None):
    """`(labels, sample weights, cached teacher outputs or None)` of a batch.

    Keras gives a nested `y` a matching nest of sample weights (the same
    array at every leaf): any one leaf is the per-sample weight.
    """
    if not _is_cached(y):
        return y, sample_weight, None
    if _is_cached(sample_weight):
        sample_weight = sample_weight[_CACHE_KEY]["logits"]
    cache = y[_CACHE_KEY]
    return cache.get("labels"), sample_weight, cache


def _check_model(model, argument):
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`{argument}` must be a keras.Model; received "
            f"{type(model).__name__}: {model!r}."
        )
    rewrite.check_built(model, argument)


def _single_input(model):
    # A one-input Functional model called with a bare tensor warns when its
    # inputs are given as a list; several inputs keep their structure.
    if len(model.inputs) == 1:
        return model.inputs[0]
    return model.input


def _output_shape(model, argument):
    """The model's output shape, or None if it cannot be known before data."""
    outputs = getattr(model, "outputs", None)
    if outputs is None:
        build_config = model.get_build_config() or {}
        input_shape = build_config.get("input_shape")
        if input_shape is None:
            return None
        try:
            spec = model.compute_output_spec(
                rewrite.symbolic_inputs(input_shape)
            )
        except Exception:  # noqa: BLE001 - any failure: check at run time
            return None
        outputs = keras.tree.flatten(spec)
    if len(outputs) != 1:
        raise ValueError(
            f"Distiller supports a {argument} with one output (logits); "
            f"`{argument}` '{model.name}' has {len(outputs)} outputs."
        )
    return tuple(outputs[0].shape)


def _compatible(shape_a, shape_b):
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )


def _check_fraction(value, argument):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(
            f"`{argument}` must be a number in [0, 1] (the weight of the "
            f"student's own loss); received {argument}={value!r}."
        )
    return float(value)


def check_keras_io_arguments(alpha, temperature, prefix=""):
    """Raises a ValueError unless `alpha` is in [0, 1] and `temperature` > 0.

    Args:
        alpha: The keras.io `alpha` (weight of the student's own loss).
        temperature: The keras.io softening temperature.
        prefix: Put before the argument names in messages, e.g.
            `"distill"` gives `distill['alpha']`.
    """

    def name(argument):
        return f"{prefix}[{argument!r}]" if prefix else argument

    _check_fraction(alpha, name("alpha"))
    losses_lib.check_temperature(temperature, name("temperature"))


def _find_layer(model, name, role):
    """The top-level layer `name` of `model`, or of a pruning wrapper."""
    if not rewrite.is_graph_model(model):
        raise ValueError(
            f"FeatureDistillation names {role} layer {name!r}, but the "
            f"{role} '{model.name}' is a subclassed {type(model).__name__}, "
            "whose intermediate outputs cannot be read. Use a Functional or "
            f"Sequential {role}, or {role}_layer=None for its output."
        )
    for layer in model.layers:
        if layer.name == name:
            return layer
    for layer in model.layers:
        # A pruned (or otherwise wrapped) student keeps its original names
        # on the inner layers: accept those too.
        if isinstance(layer, keras.layers.Wrapper) and layer.layer.name == name:
            return layer
    names = [layer.name for layer in model.layers]
    raise ValueError(
        f"FeatureDistillation: the {role} '{model.name}' has no layer named "
        f"{name!r}. Its layers are {names}."
    )


def _describe(term):
    """`"teacher->student (loss, weight w)"` of a `FeatureDistillation`."""
    loss = term.loss
    if not isinstance(loss, str):
        loss = getattr(loss, "name", None) or type(loss).__name__
    return f"{term.name} ({loss}, weight {term.weight:g})"


def _symbolic_output(layer, role):
    try:
        return layer.output
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"FeatureDistillation: cannot read the output of {role} layer "
            f"'{layer.name}': it is used more than once (or never) in the "
            f"model. Pick a layer called exactly once. ({error})"
        ) from error


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Distiller(keras.Model):
    """Trains `student` on labels and on the outputs of a frozen `teacher`.

    The loss minimized by `fit` is

        alpha * student_loss_fn(y, student(x))
        + (1 - alpha) * distillation_loss(teacher(x), student(x))
        + sum(w_i * feature_loss_i)  + the student's regularization losses

    `compile()` without `alpha`, `temperature` or `distillation_loss_fn`
    runs the default recipe: `alpha=0.5`, `CorrelationDistillation(T=1)`
    and, unless `feature_distillations` were given, a hint (weight 0.5)
    between the layers that feed the two classifiers. With any of the
    keras.io arguments the distillation loss is
    `T² · KL(softmax(teacher / T) ‖ softmax(student / T))`
    (`SoftTargetKLDivergence`), `alpha=0.1` and `T=3` unless given.
    `distiller.recipe` says which ran. The teacher always runs with
    `training=False` and its variables are never updated (the teacher model
    object itself is not modified). `call` runs the student, so `predict`
    and the compiled metrics see the student; `fit` and `evaluate` also
    report `student_loss`, `distillation_loss` (and `feature_loss`).

    After training, `distiller.student` is the trained model to save, strip
    (`kc.pruning.strip_pruning`) and convert. The `Distiller` itself saves
    to `.keras` too (with student, teacher, projections and compile
    arguments).

    A pruned student works as is: pass `kc.pruning.UpdatePruningStep()` to
    `distiller.fit(...)`; it finds the student's pruned layers inside the
    Distiller.

    Args:
        student: The built `keras.Model` to train. It must output logits.
        teacher: A built, trained `keras.Model` with logits of the same
            shape as the student's.
        feature_distillations: Optional `FeatureDistillation` terms (or a
            single one) that match intermediate layers of the two models,
            each with its weight and, when the widths differ, a learned
            projection of the student's features.
        cache_teacher_outputs: If `True`, `fit(x, y)` runs the teacher once
            over `x` before training (its logits and the features the
            `FeatureDistillation` terms need) and feeds those to every
            epoch, instead of a teacher forward pass per step. Exact, since
            the teacher is frozen and runs in inference mode; needs `x` and
            `y` as arrays (not a dataset or generator, whose inputs may
            change between epochs) and memory for one teacher output per
            sample. A `validation_split` is cut from the cached outputs;
            separate `validation_data` runs the teacher.
        augmentation: Optional Keras layer (e.g. a `keras.Sequential` of
            `RandomFlip`, `RandomTranslation`) applied to the inputs of each
            training step; the teacher and the student both see its
            output ("consistent teaching"). Not applied in `evaluate` or
            `predict`; cannot be combined with `cache_teacher_outputs`.
        name: Name of the model.
        **kwargs: Base `keras.Model` arguments.

    Example:

    ```python
    distiller = kc.distillation.Distiller(student=student, teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True),
    )
    distiller.fit(x_train, y_train, epochs=3)
    distiller.evaluate(x_test, y_test)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        student,
        teacher,
        feature_distillations=None,
        cache_teacher_outputs=False,
        augmentation=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not isinstance(cache_teacher_outputs, bool):
            raise ValueError(
                "`cache_teacher_outputs` must be True or False; received "
                f"cache_teacher_outputs={cache_teacher_outputs!r}."
            )
        if isinstance(augmentation, dict):
            augmentation = keras.saving.deserialize_keras_object(augmentation)
        if augmentation is not None and not isinstance(
            augmentation, keras.layers.Layer
        ):
            raise ValueError(
                "`augmentation` must be a keras Layer (e.g. keras.Sequential"
                "([keras.layers.RandomFlip(), keras.layers.RandomRotation("
                "0.1)])); received "
                f"{type(augmentation).__name__}: {augmentation!r}. To augment "
                "in a tf.data pipeline instead, pass no augmentation: the "
                "teacher and the student always see the same batch."
            )
        if augmentation is not None and cache_teacher_outputs:
            raise ValueError(
                "`cache_teacher_outputs=True` cannot be combined with "
                "`augmentation`: the teacher must see each step's augmented "
                "inputs, so its outputs cannot be computed once. Use one of "
                "them."
            )
        _check_model(student, "student")
        _check_model(teacher, "teacher")
        if student is teacher:
            raise ValueError(
                "`student` and `teacher` are the same model "
                f"('{student.name}'); the student must be a separate model."
            )
        if prune_api.get_pruners(teacher):
            # UpdatePruningStep would find the teacher's pruned layers too
            # and keep changing its masks and weights during distillation.
            raise ValueError(
                f"The teacher '{teacher.name}' has pruning wrappers. Strip "
                "them first: teacher = kc.pruning.strip_pruning(teacher)."
            )
        teacher_shape = _output_shape(teacher, "teacher")
        student_shape = _output_shape(student, "student")
        if (
            teacher_shape is not None
            and student_shape is not None
            and not _compatible(teacher_shape[1:], student_shape[1:])
        ):
            raise ValueError(
                "Teacher and student outputs must have the same shape (the "
                f"same logits); teacher '{teacher.name}' outputs "
                f"{teacher_shape}, student '{student.name}' outputs "
                f"{student_shape}."
            )
        self.student = student
        self.teacher = teacher

        # None lets the default recipe of `compile()` add a hint; a list
        # (even empty) is the user's choice and is kept as given.
        self._terms_given = feature_distillations is not None
        if feature_distillations is None:
            feature_distillations = []
        elif isinstance(
            feature_distillations, features_lib.FeatureDistillation
        ):
            feature_distillations = [feature_distillations]
        terms = []
        for term in feature_distillations:
            if isinstance(term, dict):
                term = keras.saving.deserialize_keras_object(term)
            if not isinstance(term, features_lib.FeatureDistillation):
                raise ValueError(
                    "`feature_distillations` must hold "
                    "kc.distillation.FeatureDistillation objects; received "
                    f"{term!r}."
                )
            terms.append(term)
        self._user_terms = terms
        self._automatic_hint = _Slot()  # (term, projection) once built
        self._terms = terms
        self.projections = self._build_feature_extraction(terms)
        self.cache_teacher_outputs = cache_teacher_outputs
        self.augmentation = augmentation

        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self._feature_loss_tracker = keras.metrics.Mean(name="feature_loss")
        # The student's features of the last forward pass, so that
        # `compute_loss` does not run the student a second time.
        self._pending = _Slot()
        self._reset_compile_arguments()
        self.built = True

    @property
    def metrics(self):
        metrics = super().metrics
        if not self._terms:
            # `feature_loss` is reported only when there is a feature term.
            unused = self._feature_loss_tracker
            metrics = [metric for metric in metrics if metric is not unused]
        return metrics

    # Construction helpers.

    def _build_feature_extraction(self, terms, extract=True):
        """Creates the feature extractors and projections for `terms`.

        With `extract=False` only the projections are made (and the terms
        checked), for a term not yet in use; the extractors stay as they are.
        """
        teacher_features = []  # symbolic outputs, in extractor order
        student_features = []
        teacher_index = []  # per term: index in extractor, None=output
        student_index = []
        projections = []
        first = 0 if extract else len(self._terms)
        for position, term in enumerate(terms, start=first):
            indices = []
            shapes = []
            for role, model, name, tensors in (
                ("teacher", self.teacher, term.teacher_layer, teacher_features),
                ("student", self.student, term.student_layer, student_features),
            ):
                if name is None:
                    indices.append(None)
                    shapes.append(_output_shape(model, role))
                    continue
                output = _symbolic_output(_find_layer(model, name, role), role)
                indices.append(len(tensors))
                tensors.append(output)
                shapes.append(tuple(output.shape))
            teacher_index.append(indices[0])
            student_index.append(indices[1])
            projections.append(self._make_projection(position, term, *shapes))
        if not extract:
            return projections

        self._teacher_index = teacher_index
        self._student_index = student_index
        self._teacher_extractor = _Slot()
        self._student_extractor = _Slot()
        for slot, model, tensors in (
            (self._teacher_extractor, self.teacher, teacher_features),
            (self._student_extractor, self.student, student_features),
        ):
            if tensors:
                slot.value = keras.Model(
                    _single_input(model),
                    {"output": model.outputs[0], "features": tensors},
                    name=f"{model.name}_features",
                )
        return projections

    def _make_projection(self, position, term, teacher_shape, student_shape):
        if teacher_shape is None or student_shape is None:
            if term.projection == "always":
                raise ValueError(
                    f"FeatureDistillation {term.name}: projection='always' "
                    "needs known feature shapes; use Functional or "
                    "Sequential models."
                )
            return None
        if len(teacher_shape) != len(student_shape) or not _compatible(
            teacher_shape[1:-1], student_shape[1:-1]
        ):
            raise ValueError(
                f"FeatureDistillation {term.name}: the teacher features have "
                f"shape {teacher_shape} and the student features "
                f"{student_shape}; all axes but the last (channels) must "
                "match. Choose layers at the same spatial resolution."
            )
        teacher_width, student_width = teacher_shape[-1], student_shape[-1]
        if term.projection == "never" or (
            term.projection == "auto" and teacher_width == student_width
        ):
            if teacher_width != student_width:
                raise ValueError(
                    f"FeatureDistillation {term.name}: the teacher features "
                    f"have {teacher_width} channels and the student features "
                    f"{student_width}, and projection='never'. Use "
                    "projection='auto' to learn a projection."
                )
            return None
        projection = keras.layers.Dense(
            teacher_width, name=f"feature_projection_{position}"
        )
        projection.build(student_shape)
        return projection

    # Training.

    def _reset_compile_arguments(self):
        self.alpha = DEFAULT_ALPHA
        self.temperature = DEFAULT_TEMPERATURE
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self._distillation_on_logits = True
        self._compile_arguments = None
        self._recipe = None

    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn=None,
        alpha=None,
        temperature=None,
        loss=None,
        **kwargs,
    ):
        """Configures the distillation (the keras.io `Distiller` arguments).

        With none of `distillation_loss_fn`, `alpha` and `temperature`
        given, the **default recipe** runs: `alpha=0.5`, the correlation
        loss `CorrelationDistillation(temperature=1)` on the logits, and,
        when the `Distiller` was created without `feature_distillations`, a
        feature hint (MSE, weight 0.5, learned projection) between the
        layers that feed the two models' classifiers (see
        `FeatureDistillation` and `recipe`). On the test sets of
        docs/distillation.md it beat the student trained alone by 1.47
        points with a student 89x smaller than its teacher and by 0.30
        (within the seed-to-seed noise) on the reference workload, where
        the keras.io loss lost 1.15 and 0.98 points. Giving any of the
        three selects the keras.io loss with exactly the keras.io meaning
        (the others default to `alpha=0.1`, `temperature=3`, T² · KL), and
        no automatic hint.

        Args:
            optimizer: Optimizer for the student (name or instance). When
                the student computes in float16 (`mixed_float16`) it is
                wrapped in a `keras.optimizers.LossScaleOptimizer`.
            metrics: Metrics of the student's predictions against `y`.
            student_loss_fn: Loss between labels and student logits, e.g.
                `keras.losses.SparseCategoricalCrossentropy(from_logits=
                True)`. Required when `alpha > 0` (and by the default
                recipe).
            distillation_loss_fn: `None` for the recipe's loss. A
                `SoftTargetKLDivergence` or `CorrelationDistillation`
                instance is applied to the logits with its own temperature.
                Any other loss follows the keras.io example: it is given
                `softmax(teacher / T)` and `softmax(student / T)` and its
                value is multiplied by T² (so `keras.losses.KLDivergence()`
                gives the same loss as `SoftTargetKLDivergence`).
            alpha: Weight of the student loss in [0, 1]; the distillation
                loss gets `1 - alpha`. Defaults to 0.1 when another keras.io
                argument is given, 0.5 in the default recipe.
            temperature: Softening temperature `T` > 0. Defaults to that of
                a logits loss given as `distillation_loss_fn`, else to 3
                (1 in the default recipe).
            loss: Same as `student_loss_fn` (the Keras name); give one.
            **kwargs: Other `keras.Model.compile` arguments
                (`run_eagerly`, `jit_compile`, `steps_per_execution`, ...).

        Returns:
            None. `distiller.recipe` then describes the loss that will run.
        """
        if loss is not None:
            if student_loss_fn is not None:
                raise ValueError(
                    "Pass the student loss once: either `student_loss_fn` or "
                    f"`loss`; received student_loss_fn={student_loss_fn!r} "
                    f"and loss={loss!r}."
                )
            student_loss_fn = loss
        default = (alpha, temperature, distillation_loss_fn) == (None,) * 3
        given = {"alpha": alpha, "temperature": temperature}
        if default:
            alpha, temperature = DEFAULT_ALPHA, DEFAULT_TEMPERATURE
        else:
            if alpha is None:
                alpha = KERAS_IO_ALPHA
            if temperature is None:
                temperature = getattr(
                    distillation_loss_fn, "temperature", KERAS_IO_TEMPERATURE
                )
        alpha = _check_fraction(alpha, "alpha")
        temperature = losses_lib.check_temperature(temperature)
        if student_loss_fn is None and alpha > 0:
            raise ValueError(
                f"alpha={alpha} weights the student's own loss, but no "
                "`student_loss_fn` was given. Pass one (e.g. keras.losses."
                "SparseCategoricalCrossentropy(from_logits=True)), or "
                "alpha=0 to learn from the teacher alone."
            )
        student_loss = (
            None
            if student_loss_fn is None
            else losses_lib.get_loss(student_loss_fn, "student_loss_fn")
        )
        on_logits = True
        if default:
            distillation_loss = losses_lib.CorrelationDistillation(temperature)
        elif distillation_loss_fn is None:
            distillation_loss = losses_lib.SoftTargetKLDivergence(temperature)
        elif isinstance(distillation_loss_fn, losses_lib.LOGITS_LOSSES):
            if distillation_loss_fn.temperature != temperature:
                raise ValueError(
                    "distillation_loss_fn is a "
                    f"{type(distillation_loss_fn).__name__} with "
                    f"temperature={distillation_loss_fn.temperature}, but "
                    f"compile() got temperature={temperature}. Give the "
                    "same value, or leave out one of them."
                )
            distillation_loss = distillation_loss_fn
        else:
            distillation_loss = losses_lib.get_loss(
                distillation_loss_fn, "distillation_loss_fn"
            )
            on_logits = False

        hint, no_hint = None, None
        if default and not self._terms_given:
            hint, no_hint = self._build_automatic_hint()
        terms = self._user_terms + ([hint] if hint is not None else [])
        if terms != self._terms:
            self._set_terms(terms)

        if (
            kwargs.get("auto_scale_loss", True)
            and optimizer is not None
            and loss_scaling.needs_loss_scaling(self.student)
        ):
            # Keras only wraps the optimizer when the *outer* model's policy
            # is mixed_float16; here it is the student that computes in
            # float16, and its small gradients would underflow.
            optimizer = loss_scaling.loss_scale_optimizer(
                optimizer, "mixed_float16"
            )

        super().compile(
            optimizer=optimizer, loss=None, metrics=metrics, **kwargs
        )
        self.alpha = alpha
        self.temperature = temperature
        self.student_loss_fn = student_loss
        self.distillation_loss_fn = distillation_loss
        self._distillation_on_logits = on_logits
        # The arguments as given, for get_compile_config().
        self._compile_arguments = {
            "student_loss_fn": student_loss_fn,
            "distillation_loss_fn": distillation_loss_fn,
            **given,
        }
        self._recipe = {
            "name": "default" if default else "keras.io",
            "alpha": alpha,
            "temperature": temperature,
            "distillation_loss": type(distillation_loss).__name__
            if on_logits
            else f"{type(distillation_loss).__name__} on softened "
            "probabilities",
            "feature_distillations": [_describe(term) for term in terms],
            "automatic_hint": None if hint is None else hint.name,
        }
        if no_hint is not None:
            self._recipe["no_automatic_hint"] = no_hint

    @property
    def recipe(self):
        """What `compile()` set up, as a dict (None before `compile`).

        Keys: `name` (`"default"` or `"keras.io"`), `alpha`,
        `temperature`, `distillation_loss` (the class, and whether it
        compares logits or softened probabilities),
        `feature_distillations` (`"teacher->student (loss, weight w)"`),
        `automatic_hint` (the hint the default recipe added, or None) and,
        when the default recipe found no layers for a hint,
        `no_automatic_hint` (why).
        """
        return None if self._recipe is None else dict(self._recipe)

    def _build_automatic_hint(self):
        """The default recipe's hint: `(term, None)` or `(None, reason)`."""
        if self._automatic_hint.value is not None:
            return self._automatic_hint.value[0], None
        names = []
        for model in (self.teacher, self.student):
            name, reason = features_lib.classifier_features(model)
            if name is None:
                return None, f"no hint: {reason}"
            names.append(name)
        term = features_lib.FeatureDistillation(
            names[0], names[1], weight=DEFAULT_HINT_WEIGHT
        )
        try:
            (projection,) = self._build_feature_extraction(
                [term], extract=False
            )
        except ValueError as error:
            return None, f"no hint: {error}"
        self._automatic_hint.value = (term, projection)
        return term, None

    def _set_terms(self, terms):
        """Uses `terms` from now on (the automatic hint comes and goes)."""
        automatic = self._automatic_hint.value
        projections = self._build_feature_extraction(terms)
        for position, term in enumerate(terms):
            if automatic is not None and term is automatic[0]:
                # The same projection on every compile: it keeps what it
                # learned (and what a saved Distiller loads into it).
                projections[position] = automatic[1]
        self._terms = terms
        self.projections = projections

    def call(self, inputs, training=None):
        if training and self.augmentation is not None:
            inputs = self.augmentation(inputs, training=True)
        extractor = self._student_extractor.value
        if extractor is None:
            logits, features = self.student(inputs, training=training), []
        else:
            # The extractor shares the student's layers: one forward pass
            # gives the logits and the features that `compute_loss` needs.
            outputs = extractor(inputs, training=training)
            logits, features = outputs["output"], outputs["features"]
        # What `compute_loss` needs from this pass: the student's features,
        # and the (augmented) inputs, which the teacher must see too.
        self._pending.value = (logits, features, inputs)
        return logits

    def _student_pass(self, x, y_pred, training):
        """`(student features, inputs the student saw)` for `y_pred`."""
        pending, self._pending.value = self._pending.value, None
        # Use the pass that produced `y_pred`; any other case (compute_loss
        # called directly, a stale pass from predict) runs the student
        # again, on `x` as given.
        if pending is not None and pending[0] is y_pred:
            return pending[1], pending[2]
        extractor = self._student_extractor.value
        if extractor is None:
            return [], x
        return extractor(x, training=training)["features"], x

    def _teacher_outputs(self, x, cached=None):
        if cached is not None:
            return cached["logits"], list(cached["features"])
        extractor = self._teacher_extractor.value
        if extractor is None:
            logits, features = self.teacher(x, training=False), []
        else:
            outputs = extractor(x, training=False)
            logits, features = outputs["output"], outputs["features"]
        stop = ops.stop_gradient
        return stop(logits), [stop(feature) for feature in features]

    def _distillation_loss(self, teacher_logits, student_logits, sample_weight):
        if self._distillation_on_logits:
            return self.distillation_loss_fn(
                teacher_logits, student_logits, sample_weight=sample_weight
            )
        # keras.io semantics: the loss compares softened probabilities and
        # is scaled by T² to keep its gradients comparable across T.
        temperature = self.temperature

        def soften(logits):
            return ops.softmax(ops.cast(logits, "float32") / temperature)

        value = self.distillation_loss_fn(
            soften(teacher_logits),
            soften(student_logits),
            sample_weight=sample_weight,
        )
        return value * (temperature**2)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if self.distillation_loss_fn is None:
            raise RuntimeError(
                f"Distiller '{self.name}' must be compiled before training or "
                "evaluation: call distiller.compile(optimizer, metrics, "
                "student_loss_fn, ...)."
            )
        y, sample_weight, cached = _split_teacher_cache(y, sample_weight)
        if y_pred is None:
            y_pred = self(x, training=training)
        student_features, x = self._student_pass(x, y_pred, training)
        teacher_logits, teacher_features = self._teacher_outputs(x, cached)

        zero = ops.zeros((), dtype="float32")
        student_loss = zero
        if self.alpha > 0:
            if y is None:
                raise ValueError(
                    f"alpha={self.alpha} weights the student's own loss, "
                    "which needs labels, but the data has no targets. Pass "
                    "(x, y), or compile with alpha=0."
                )
            student_loss = self.student_loss_fn(
                y, y_pred, sample_weight=sample_weight
            )
        distillation_loss = zero
        if self.alpha < 1:
            distillation_loss = self._distillation_loss(
                teacher_logits, y_pred, sample_weight
            )
        total = self.alpha * ops.cast(student_loss, "float32") + (
            1.0 - self.alpha
        ) * ops.cast(distillation_loss, "float32")

        feature_loss = zero
        for index, term in enumerate(self._terms):
            t_index = self._teacher_index[index]
            s_index = self._student_index[index]
            teacher = (
                teacher_logits if t_index is None else teacher_features[t_index]
            )
            student = y_pred if s_index is None else student_features[s_index]
            projection = self.projections[index]
            if projection is not None:
                student = projection(student)
            value = term.loss_fn(
                ops.cast(teacher, "float32"),
                ops.cast(student, "float32"),
                sample_weight=sample_weight,
            )
            feature_loss = feature_loss + term.weight * ops.cast(
                value, "float32"
            )
        total = total + feature_loss

        # Regularization losses of the student and projections only: the
        # teacher's would add a constant that no step can lower.
        extra = list(self.student.losses)
        for projection in self.projections:
            if projection is not None:
                extra.extend(projection.losses)
        for loss in extra:
            total = total + ops.cast(
                self._aggregate_additional_loss(loss), "float32"
            )

        self.student_loss_tracker.update_state(
            keras_private.unscale_loss_for_distribution(student_loss)
        )
        self.distillation_loss_tracker.update_state(
            keras_private.unscale_loss_for_distribution(distillation_loss)
        )
        if self._terms:
            self._feature_loss_tracker.update_state(
                keras_private.unscale_loss_for_distribution(feature_loss)
            )
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y, sample_weight, _ = _split_teacher_cache(y, sample_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Trains the student, like `keras.Model.fit`.

        With `cache_teacher_outputs=True`, the teacher first runs once over
        `x`; see the class docstring.
        """
        if self.cache_teacher_outputs:
            if kwargs.get("class_weight") is not None:
                # Keras applies class weights to a single label array only;
                # here the labels travel with the cached outputs.
                raise ValueError(
                    "cache_teacher_outputs=True does not support "
                    "`class_weight`. Pass the weights per sample instead: "
                    "sample_weight=np.array([class_weight[c] for c in y])."
                )
            # The teacher runs at the training batch size: what fits in
            # memory for training fits for its forward pass.
            batch_size = kwargs.get("batch_size", args[0] if args else None)
            y = self._attach_teacher_cache(x, y, batch_size)
        training.build_optimizer(self)
        return super().fit(x, y, *args, **kwargs)

    def _attach_teacher_cache(self, x, y, batch_size=None):
        """`y` with the teacher's outputs on `x` attached, sample by sample.

        Keras slices, shuffles and splits (`validation_split`) the nested
        arrays of `y` together with `x`, so each batch carries the teacher
        outputs of its own samples.
        """
        leaves = keras.tree.flatten((x, y))
        if x is None or not all(
            leaf is None or isinstance(leaf, np.ndarray) or ops.is_tensor(leaf)
            for leaf in leaves
        ):
            raise ValueError(
                "cache_teacher_outputs=True needs `x` (and `y`) as arrays: "
                "the teacher's outputs are computed once per sample. "
                f"Received x of type {type(x).__name__}; a dataset or "
                "generator may give different inputs in each epoch. Pass "
                "arrays, or create the Distiller with "
                "cache_teacher_outputs=False."
            )
        extractor = self._teacher_extractor.value
        model = extractor if extractor is not None else self.teacher
        num_samples = len(keras.tree.flatten(x)[0])
        # One sample first: the size of the cache, before committing memory.
        first = model.predict(
            keras.tree.map_structure(lambda a: a[:1], x), verbose=0
        )
        floats = sum(np.size(output) for output in keras.tree.flatten(first))
        needed = num_samples * floats * 4
        if needed > _MAX_CACHE_BYTES:
            raise ValueError(
                f"Caching the teacher's outputs for {num_samples} samples "
                f"needs at least {needed / 2**30:.1f} GiB ({floats} values "
                "per sample: its logits and the feature layers of the "
                "FeatureDistillation terms). Distill from smaller feature "
                "layers, or use cache_teacher_outputs=False."
            )
        outputs = model.predict(x, batch_size=batch_size, verbose=0)
        if extractor is not None:
            logits, features = outputs["output"], list(outputs["features"])
        else:
            logits, features = outputs, []
        cache = {"logits": logits, "features": features}
        if y is not None:
            cache["labels"] = y
        return {_CACHE_KEY: cache}

    # The teacher is frozen here, not by setting `teacher.trainable = False`
    # on the user's model: its variables are reported as non-trainable by
    # the Distiller, so neither the optimizer nor the gradient tape sees
    # them.

    def _teacher_variable_ids(self):
        return {id(variable) for variable in self.teacher.variables}

    @property
    def trainable_weights(self):
        frozen = self._teacher_variable_ids()
        return [v for v in super().trainable_weights if id(v) not in frozen]

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return super().non_trainable_weights
        frozen = self._teacher_variable_ids()
        teacher = [v for v in super().trainable_weights if id(v) in frozen]
        return super().non_trainable_weights + teacher

    @property
    def trainable_variables(self):
        frozen = self._teacher_variable_ids()
        return [v for v in super().trainable_variables if id(v) not in frozen]

    @property
    def non_trainable_variables(self):
        if not self.trainable:
            return super().non_trainable_variables
        frozen = self._teacher_variable_ids()
        teacher = [v for v in super().trainable_variables if id(v) in frozen]
        return super().non_trainable_variables + teacher

    # Serialization.

    @property
    def feature_distillations(self):
        """The `FeatureDistillation` terms, in order."""
        return list(self._terms)

    def get_config(self):
        return {
            "name": self.name,
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            # None (not given) lets the default recipe add its hint again.
            "feature_distillations": [
                keras.saving.serialize_keras_object(term)
                for term in self._user_terms
            ]
            if self._terms_given
            else None,
            "cache_teacher_outputs": self.cache_teacher_outputs,
            "augmentation": None
            if self.augmentation is None
            else keras.saving.serialize_keras_object(self.augmentation),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(
            config.pop("student"), custom_objects=custom_objects
        )
        teacher = keras.saving.deserialize_keras_object(
            config.pop("teacher"), custom_objects=custom_objects
        )
        terms = config.pop("feature_distillations", [])
        if terms is not None:
            terms = [
                keras.saving.deserialize_keras_object(
                    term, custom_objects=custom_objects
                )
                for term in terms
            ]
        augmentation = config.pop("augmentation", None)
        if augmentation is not None:
            augmentation = keras.saving.deserialize_keras_object(
                augmentation, custom_objects=custom_objects
            )
        return cls(
            student,
            teacher,
            feature_distillations=terms,
            augmentation=augmentation,
            **config,
        )

    def get_compile_config(self):
        config = super().get_compile_config()
        if not config or self._compile_arguments is None:
            return config
        config = dict(config)
        config.pop("loss", None)
        for key, value in self._compile_arguments.items():
            config[key] = keras.saving.serialize_keras_object(value)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)
