"""The steps of a compression recipe: each takes a model, returns a new one.

A step wraps the model with one technique, fine-tunes it (through a
`Distiller` when the pipeline has a teacher) and returns a model the next
step can take: pruning returns the stripped model, so that quantization-
aware training after it keeps its zeros (`preserve_sparsity`).
"""

import dataclasses

import keras

from keras_compress import clustering
from keras_compress import distillation
from keras_compress import pruning
from keras_compress import quantization
from keras_compress import rewrite
from keras_compress.core import training
from keras_compress.pruning import prune_api
from keras_compress.quantization import quantize_api


@dataclasses.dataclass
class TrainingContext:
    """What every fine-tuning step needs, set up by `compress()`.

    Attributes:
        train_data: `(x, y)` arrays or a batched `tf.data.Dataset` of
            `(x, y)`.
        loss: The training loss (a `keras.losses.Loss`).
        batch_size: Batch size for array data.
        steps_per_epoch: Optimizer steps in one epoch.
        teacher: A model to distill from, or `None`.
        strategy: A `tf.distribute.Strategy`, or `None`.
        verbose: `fit` verbosity.
        callbacks: Extra callbacks for every `fit`.
        alpha: Weight of the label loss when distilling; with
            `temperature`, `None` runs the `Distiller`'s default recipe.
        temperature: Softmax temperature when distilling.
        distillation_recipe: `Distiller.recipe` of the last distilled
            `fit` (set by `fit`), for the report.
    """

    train_data: object
    loss: object
    batch_size: int = 128
    steps_per_epoch: int = 1
    teacher: object = None
    strategy: object = None
    verbose: object = "auto"
    callbacks: tuple = ()
    alpha: float = None
    temperature: float = None
    distillation_recipe: dict = None

    def scope(self):
        if self.strategy is None:
            import contextlib

            return contextlib.nullcontext()
        return self.strategy.scope()

    def fit(self, model, epochs, learning_rate, callbacks=(), schedule=None):
        """Compiles `model` (or a Distiller around it) and trains it.

        `schedule="cosine"` decays the rate to 0 over the `epochs`.
        """
        with self.scope():
            if schedule == "cosine":
                learning_rate = keras.optimizers.schedules.CosineDecay(
                    learning_rate, max(1, epochs * self.steps_per_epoch)
                )
            optimizer = keras.optimizers.Adam(learning_rate)
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            if self.teacher is not None:
                trainer = distillation.Distiller(
                    student=model, teacher=self.teacher
                )
                # None for both: the Distiller's default recipe.
                trainer.compile(
                    optimizer=optimizer,
                    metrics=[accuracy],
                    student_loss_fn=self.loss,
                    alpha=self.alpha,
                    temperature=self.temperature,
                )
                self.distillation_recipe = trainer.recipe
            else:
                trainer = model
                trainer.compile(
                    optimizer=optimizer, loss=self.loss, metrics=[accuracy]
                )
        callbacks = list(callbacks) + list(self.callbacks)
        if self._multi_worker():
            self._fit_multi_worker(trainer, epochs, callbacks)
        else:
            self._fit(trainer, epochs, callbacks)
        return model

    def _multi_worker(self):
        import tensorflow as tf

        return isinstance(
            self.strategy, tf.distribute.MultiWorkerMirroredStrategy
        )

    def _fit_multi_worker(self, trainer, epochs, callbacks):
        """`fit` for multi-worker strategies, on Keras's own `train_step`.

        Keras 3 `fit` fails under `MultiWorkerMirroredStrategy` before the
        first step (keras-team/keras#20585: it reduces the first `(x, y)`
        batch and the scalar logs across workers in ways the strategy
        cannot do). This loop runs the same `train_step` through
        `strategy.run` (gradients are all-reduced by the optimizer, as in
        `fit`), averages the logs across workers and calls the callbacks
        around each batch. Every worker runs the same number of steps:
        the data repeats, and an epoch is `steps_per_epoch` global batches.
        """
        import tensorflow as tf

        strategy = self.strategy
        if isinstance(self.train_data, tuple):
            dataset = (
                tf.data.Dataset.from_tensor_slices(self.train_data)
                # The same order on every worker, so that each one keeps
                # its own shard of every global batch.
                .shuffle(len(self.train_data[0]), seed=0)
                .repeat()
                .batch(self.batch_size, drop_remainder=True)
            )
        else:
            dataset = self.train_data.repeat()
        batches = iter(strategy.experimental_distribute_dataset(dataset))
        with strategy.scope():
            trainer.optimizer.build(trainer.trainable_variables)

        @tf.function
        def train_step(batch):
            logs = strategy.run(trainer.train_step, args=(batch,))
            return {
                name: strategy.reduce("MEAN", value, axis=None)
                for name, value in logs.items()
            }

        callback_list = keras.callbacks.CallbackList(
            callbacks,
            add_progbar=self.verbose != 0,
            model=trainer,
            verbose=1 if self.verbose == "auto" else self.verbose,
            epochs=epochs,
            steps=self.steps_per_epoch,
        )
        trainer.stop_training = False
        callback_list.on_train_begin()
        logs = {}
        for epoch in range(epochs):
            trainer.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step in range(self.steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                logs = {
                    name: float(value)
                    for name, value in train_step(next(batches)).items()
                }
                callback_list.on_train_batch_end(step, logs)
            callback_list.on_epoch_end(epoch, logs)
            if trainer.stop_training:
                break
        callback_list.on_train_end(logs)

    def _fit(self, trainer, epochs, callbacks):
        training.build_optimizer(trainer)
        if isinstance(self.train_data, tuple):
            x, y = self.train_data
            trainer.fit(
                x,
                y,
                batch_size=self.batch_size,
                epochs=epochs,
                verbose=self.verbose,
                callbacks=callbacks,
            )
        else:
            trainer.fit(
                self.train_data,
                epochs=epochs,
                verbose=self.verbose,
                callbacks=callbacks,
            )


class Step:
    """Base class of recipe steps.

    Subclasses set `name` (the `"step"` key of their config), implement
    `apply(model, context)` and `get_config()`, and take their config
    as constructor arguments.
    """

    name = None
    # Steps that train write their result to the run folder (for resume);
    # the others are cheap to apply again.
    trains = True

    def apply(self, model, context):
        """Returns a new, compressed and fine-tuned model.

        Args:
            model: The model from the previous step (not changed).
            context: A `TrainingContext`.
        """
        raise NotImplementedError

    def check(self, model):
        """Raises a `ValueError` if the step cannot run on `model`.

        Called for every step before any step trains, so that a recipe
        fails in seconds rather than after the steps before it.
        """

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def describe(self):
        """One line for logs and reports, e.g. `prune(sparsity=0.8)`."""
        config = self.get_config()
        arguments = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{self.name}({arguments})"

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __repr__(self):
        return self.describe()


def check_epochs(epochs, step=None):
    """Raises a ValueError unless `epochs` is an integer >= 1."""
    # Masks and fake-quant ranges are only set while training.
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        where = f"Step '{step}': " if step else ""
        raise ValueError(
            f"{where}`epochs` must be an integer >= 1; received {epochs!r}."
        )


def _check_learning_rate(learning_rate, step):
    if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        raise ValueError(
            f"Step '{step}': `learning_rate` must be > 0; received "
            f"{learning_rate!r}."
        )


class Prune(Step):
    """Magnitude pruning with a polynomial schedule, then `strip_pruning`.

    Sparsity ramps from 0 to its target over the first 70 % of the
    fine-tuning steps, in about ten increments, and holds for the rest so
    the model recovers at the final sparsity.

    Args:
        sparsity: Final sparsity in [0, 1) for every prunable layer, or a
            dict `{layer name: sparsity}` (layers not named are not
            pruned; needs a Sequential or Functional model).
        epochs: Fine-tuning epochs.
        learning_rate: Adam learning rate of the fine-tuning.

    Example:

    ```python
    step = Prune(sparsity={"dense": 0.9, "conv2d_1": 0.7}, epochs=2)
    ```
    """

    name = "prune"

    def __init__(self, sparsity=0.8, epochs=2, learning_rate=1e-4):
        if isinstance(sparsity, dict):
            values = dict(sparsity)
        else:
            values = {None: sparsity}
        for layer, value in values.items():
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                where = f" for layer '{layer}'" if layer else ""
                raise ValueError(
                    f"Step 'prune': `sparsity`{where} must be in [0, 1); "
                    f"received {value!r}."
                )
        check_epochs(epochs, self.name)
        _check_learning_rate(learning_rate, self.name)
        self.sparsity = (
            {str(k): float(v) for k, v in sparsity.items()}
            if isinstance(sparsity, dict)
            else float(sparsity)
        )
        self.epochs = epochs
        self.learning_rate = float(learning_rate)

    def _schedule(self, sparsity, context):
        total_steps = max(1, context.steps_per_epoch * self.epochs)
        end_step = max(1, int(0.7 * total_steps))
        return pruning.PolynomialDecay(
            0.0,
            sparsity,
            begin_step=0,
            end_step=end_step,
            frequency=max(1, min(50, end_step // 10)),
        )

    def apply(self, model, context):
        with context.scope():
            if isinstance(self.sparsity, dict):
                wrapped = self._prune_per_layer(model, context)
            else:
                wrapped = pruning.prune_low_magnitude(
                    model,
                    pruning_schedule=self._schedule(self.sparsity, context),
                )
        if wrapped is None:
            return model
        context.fit(
            wrapped,
            self.epochs,
            self.learning_rate,
            callbacks=[pruning.UpdatePruningStep()],
        )
        return pruning.strip_pruning(wrapped)

    def _prune_per_layer(self, model, context):
        plan = {k: v for k, v in self.sparsity.items() if v > 0}
        if not plan:
            return None
        # Keys are layer paths (what the sensitivity scan reports, e.g.
        # "block/conv") or plain layer names. Composite layers (a
        # MultiHeadAttention, an LSTM) are pruned as one unit, so their
        # paths count too.
        by_key = {}
        for path, layer in rewrite.iter_layers(model, include_models=True):
            by_key.setdefault(path, layer)
            by_key.setdefault(layer.name, layer)
        unknown = sorted(set(plan) - set(by_key))
        if unknown:
            paths = sorted(
                path
                for path, _ in rewrite.iter_layers(model, include_models=True)
            )
            raise ValueError(
                f"Step 'prune': layers {unknown} are not in '{model.name}'. "
                f"Its layers: {paths}."
            )
        schedules = {
            id(by_key[key]): self._schedule(sparsity, context)
            for key, sparsity in plan.items()
        }
        return prune_api.prune_per_layer(model, schedules)

    def get_config(self):
        return {
            "sparsity": self.sparsity,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
        }


class PruneChannels(Step):
    """Channel pruning: a physically smaller model, then fine-tuning.

    Removes `ratio` of the output channels of every prunable layer, or of
    the layers a dict names (`keras_compress.pruning.prune_channels`;
    residual and concatenated blocks are pruned consistently), and
    fine-tunes the smaller model. Needs a Sequential or Functional model.

    Args:
        ratio: Fraction of the channels to remove, in [0, 1), for every
            prunable layer; or a dict `{layer name: ratio}` for those
            layers alone (what `compress()`'s budget search writes).
        epochs: Fine-tuning epochs.
        learning_rate: Adam learning rate of the fine-tuning.
        criterion: How channels are scored: `"l1"`, `"l2"` or
            `"bn_gamma"`.
        schedule: `"constant"` or `"cosine"` (decayed to 0 over the
            epochs). A model with channels removed is a new architecture:
            a constant 1e-4 barely moves it; cosine from 2e-3 recovered
            most of the loss on the reference workload
            (`benchmarks/structured_pruning_benchmark.py`).

    Example:

    ```python
    recipe = Recipe([PruneChannels(0.5), QuantizeAware()])
    recipe = Recipe([PruneChannels({"conv2d_1": 0.5, "dense": 0.25})])
    ```
    """

    name = "prune_channels"

    def __init__(
        self,
        ratio=0.5,
        epochs=2,
        learning_rate=1e-4,
        criterion="l1",
        schedule="constant",
    ):
        if schedule not in ("constant", "cosine"):
            raise ValueError(
                "Step 'prune_channels': `schedule` must be 'constant' or "
                f"'cosine'; received {schedule!r}."
            )
        ratios = ratio if isinstance(ratio, dict) else {None: ratio}
        if not ratios:
            raise ValueError(
                "Step 'prune_channels': `ratio` is an empty dict; name at "
                "least one layer, or pass one number for every layer."
            )
        for layer, value in ratios.items():
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 <= value < 1
            ):
                where = "" if layer is None else f" for layer {layer!r}"
                raise ValueError(
                    f"Step 'prune_channels': `ratio`{where} must be in "
                    f"[0, 1); received {value!r}."
                )
        check_epochs(epochs, self.name)
        _check_learning_rate(learning_rate, self.name)
        self.ratio = (
            {str(k): float(v) for k, v in ratio.items()}
            if isinstance(ratio, dict)
            else float(ratio)
        )
        self.epochs = epochs
        self.learning_rate = float(learning_rate)
        self.criterion = criterion
        self.schedule = schedule

    def check(self, model):
        if isinstance(self.ratio, dict):
            # Unknown or unprunable layer names fail here, before training.
            pruning.channel_plan(
                model, layers=self.ratio, criterion=self.criterion
            )

    def apply(self, model, context):
        with context.scope():
            if isinstance(self.ratio, dict):
                smaller = pruning.prune_channels(
                    model, layers=self.ratio, criterion=self.criterion
                )
            else:
                smaller = pruning.prune_channels(
                    model, self.ratio, criterion=self.criterion
                )
        context.fit(
            smaller, self.epochs, self.learning_rate, schedule=self.schedule
        )
        return smaller

    def get_config(self):
        return {
            "ratio": self.ratio,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "criterion": self.criterion,
            "schedule": self.schedule,
        }


class Cluster(Step):
    """Weight clustering, then `strip_clustering`.

    Each prunable weight is fine-tuned with `number_of_clusters` shared
    values (`keras_compress.clustering.cluster_weights`); zeros left by an
    earlier pruning step stay zero.

    Args:
        number_of_clusters: Shared values per weight (>= 2).
        epochs: Fine-tuning epochs.
        learning_rate: Adam learning rate of the fine-tuning.
        init: Centroid initialization: `"kmeans++"`, `"linear"`,
            `"density"` or `"random"`.

    Example:

    ```python
    recipe = Recipe([Prune(0.5), Cluster(16),
                     QuantizeAware(preserve_clusters=True)])
    ```
    """

    name = "cluster"

    def __init__(
        self,
        number_of_clusters=16,
        epochs=2,
        learning_rate=1e-4,
        init="kmeans++",
    ):
        if (
            not isinstance(number_of_clusters, int)
            or isinstance(number_of_clusters, bool)
            or number_of_clusters < 2
        ):
            raise ValueError(
                "Step 'cluster': `number_of_clusters` must be an integer >= "
                f"2; received {number_of_clusters!r}."
            )
        check_epochs(epochs, self.name)
        _check_learning_rate(learning_rate, self.name)
        self.number_of_clusters = number_of_clusters
        self.epochs = epochs
        self.learning_rate = float(learning_rate)
        self.init = init

    def apply(self, model, context):
        with context.scope():
            clustered = clustering.cluster_weights(
                model,
                self.number_of_clusters,
                cluster_centroids_init=self.init,
                preserve_sparsity=True,
            )
        context.fit(clustered, self.epochs, self.learning_rate)
        return clustering.strip_clustering(clustered)

    def get_config(self):
        return {
            "number_of_clusters": self.number_of_clusters,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "init": self.init,
        }


class QuantizeAware(Step):
    """Quantization-aware training (`quantize_model`), zeros kept.

    Args:
        epochs: Fine-tuning epochs.
        learning_rate: Adam learning rate of the fine-tuning.
        scheme: A quantization scheme name (see `quantize_model`).
        preserve_clusters: Keep the shared values of a clustered model
            (after a `Cluster` step) through QAT.

    Example:

    ```python
    recipe = Recipe([Prune(0.8), QuantizeAware(epochs=1)])
    ```
    """

    name = "quantize"

    def __init__(
        self,
        epochs=2,
        learning_rate=1e-4,
        scheme="default_8bit",
        preserve_clusters=False,
    ):
        check_epochs(epochs, self.name)
        _check_learning_rate(learning_rate, self.name)
        if preserve_clusters not in (True, False):
            raise ValueError(
                "Step 'quantize': `preserve_clusters` must be True or False; "
                f"received {preserve_clusters!r}."
            )
        self.epochs = epochs
        self.learning_rate = float(learning_rate)
        self.scheme = scheme
        self.preserve_clusters = preserve_clusters

    def check(self, model):
        quantize_api.check_supported(model)

    def apply(self, model, context):
        with context.scope():
            qat = quantization.quantize_model(
                model,
                scheme=self.scheme,
                preserve_clusters=self.preserve_clusters,
            )
        context.fit(qat, self.epochs, self.learning_rate)
        return qat

    def get_config(self):
        return {
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "scheme": self.scheme,
            "preserve_clusters": self.preserve_clusters,
        }


class QuantizePostTraining(Step):
    """Post-training quantization with a per-layer precision, at conversion.

    Nothing trains: the step sets the precision of each layer in the
    converted file (`to_tflite(precision=..., algorithm=...)`), e.g. int4
    weights with int8 activations, calibrated on the training data. It is
    the alternative to `QuantizeAware` (a recipe holds one or the other),
    for LiteRT targets other than float16, and the last step of a recipe.

    Args:
        precision: A spec for every layer with weights (`"w4a8"`, `"w4"`,
            ...) or a dict `{layer name or path: spec}`; the others get the
            target's precision. See `keras_compress.convert.LayerPrecision`.
        algorithm: Weight rounding: `"min_max"`, `"mse"` or `"gptq"`.
        activation_range: Integer activations' ranges: `"min_max"` (as
            calibrated) or `"mse"` (least squared rounding error; see
            `to_tflite`).

    Example:

    ```python
    recipe = Recipe([Prune(0.8), QuantizePostTraining("w4a8")])
    result = kc.compress(model, (x, y), (x_val, y_val), recipe=recipe)
    ```
    """

    name = "ptq"
    trains = False

    def __init__(
        self, precision="w4a8", algorithm="min_max", activation_range="min_max"
    ):
        from keras_compress.convert import layer_precision

        # Specs are checked now; layer names when the model is known.
        layer_precision.normalize(precision, "int8")
        if algorithm not in layer_precision.ALGORITHMS:
            raise ValueError(
                f"Step 'ptq': unknown `algorithm`={algorithm!r}. Expected "
                f"one of {', '.join(layer_precision.ALGORITHMS)}."
            )
        if activation_range not in layer_precision.ACTIVATION_RANGES:
            raise ValueError(
                "Step 'ptq': unknown `activation_range`="
                f"{activation_range!r}. Expected one of "
                f"{', '.join(layer_precision.ACTIVATION_RANGES)}."
            )
        self.precision = (
            precision if isinstance(precision, (str, dict)) else str(precision)
        )
        self.algorithm = algorithm
        self.activation_range = activation_range

    def check(self, model):
        from keras_compress.convert import layer_precision

        layer_precision.resolve(
            model, layer_precision.normalize(self.precision, "int8")
        )

    def apply(self, model, context):
        return model

    def get_config(self):
        return {
            "precision": self.precision,
            "algorithm": self.algorithm,
            "activation_range": self.activation_range,
        }


STEPS = {
    step.name: step
    for step in (
        Prune,
        PruneChannels,
        Cluster,
        QuantizeAware,
        QuantizePostTraining,
    )
}


def step_from_config(config):
    """Builds a step from `{"step": name, **arguments}`.

    Raises:
        ValueError: For an unknown step name or bad arguments.
    """
    if not isinstance(config, dict) or "step" not in config:
        raise ValueError(
            f"A recipe step must be a dict with a 'step' key (one of "
            f"{sorted(STEPS)}); received {config!r}."
        )
    arguments = dict(config)
    name = arguments.pop("step")
    if name not in STEPS:
        raise ValueError(
            f"Unknown recipe step {name!r}. Known steps: {sorted(STEPS)}."
        )
    try:
        return STEPS[name].from_config(arguments)
    except TypeError as error:
        raise ValueError(f"Recipe step {name!r}: {error}") from None


def step_to_config(step):
    return {"step": step.name, **step.get_config()}
