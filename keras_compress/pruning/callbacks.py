"""Callbacks that drive pruning during `model.fit`."""

import math
import os
import warnings

import keras

from keras_compress.core import keras_private
from keras_compress.pruning import masks as masks_lib
from keras_compress.pruning import prune_api


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning step and updates masks on the schedule's steps.

    Required when training a pruned model: without it the masks would never
    change, and training raises an error saying so. Finds every pruned layer
    in the model, including those of nested and subclassed models and of a
    model trained inside another one (e.g. a `Distiller`'s student).

    Mask updates happen between batches, on the host, so they cost nothing
    on the steps in between. On JAX, where a running `fit()` keeps the
    variables in its train loop, the callback syncs with it only on the
    steps that update masks and at the end of each epoch (when the masked
    weights are zeroed in the variables again, before any checkpoint).

    Example:

    ```python
    pruned.fit(x, y, epochs=2,
               callbacks=[kc.pruning.UpdatePruningStep()])
    ```

    In a custom training loop:

    ```python
    step_callback = kc.pruning.UpdatePruningStep()
    step_callback.set_model(pruned)
    step_callback.on_train_begin()
    for batch, (x, y) in enumerate(dataset):
        step_callback.on_train_batch_begin(batch)
        train_step(x, y)
    step_callback.on_train_end()
    ```
    """

    def __init__(self):
        super().__init__()
        self._pruners = []
        # On JAX the variables are synced with the train loop only when
        # masks change (`self.model` would sync on every access).
        self._sync_lazily = keras.backend.backend() == "jax"

    def on_train_begin(self, logs=None):
        self._pruners = prune_api.get_pruners(self.model)
        if not self._pruners:
            raise ValueError(
                f"UpdatePruningStep: model '{self.model.name}' has no pruned "
                "layers. Create it with "
                "keras_compress.pruning.prune_low_magnitude()."
            )
        for pruner in self._pruners:
            pruner.on_train_begin()

    def on_train_batch_begin(self, batch, logs=None):
        write = True
        if self._sync_lazily:
            write = any(p.next_step_updates_masks() for p in self._pruners)
            if write:
                keras_private.sync_jax_state(self._model)
        for pruner in self._pruners:
            pruner.advance(write_step=write)
        if self._sync_lazily and write:
            keras_private.mark_jax_state_changed(self._model)

    def on_epoch_end(self, epoch, logs=None):
        if self._sync_lazily:
            self._write_state()

    def on_train_end(self, logs=None):
        if self._sync_lazily:
            self._write_state()
        for pruner in self._pruners:
            pruner.on_train_end()
        _warn_if_unfinished(self._pruners)

    def _write_state(self):
        keras_private.sync_jax_state(self._model)
        for pruner in self._pruners:
            pruner.write_state()
        keras_private.mark_jax_state_changed(self._model)


def _warn_if_unfinished(pruners):
    """Warns when training stopped before the schedules' final sparsity.

    A schedule whose `end_step` lies beyond the steps `fit` ran leaves the
    model less sparse than asked, and `to_tflite` then writes no sparse
    file: a common surprise with `end_step` picked for a larger data set.
    """
    unfinished = []
    for pruner in pruners:
        schedule = pruner.schedule
        step = pruner._current_step()
        if schedule.end_step == -1 or step >= schedule.end_step:
            continue
        reached = schedule.sparsity_at(step)
        final = schedule.sparsity_at(schedule.end_step)
        if final > reached:
            unfinished.append((pruner.layer.name, step, schedule, reached))
    if not unfinished:
        return
    name, step, schedule, reached = unfinished[0]
    others = f" (and {len(unfinished) - 1} more layer(s))" * (
        len(unfinished) > 1
    )
    warnings.warn(
        f"Pruning stopped before its schedule ended: training ran to step "
        f"{step}, but the schedule of '{name}'{others} ends at step "
        f"{schedule.end_step}, so it is {reached:.0%} sparse instead of "
        f"{schedule.sparsity_at(schedule.end_step):.0%}. Train more steps, "
        "or set `end_step` to at most the steps `fit` runs (epochs x "
        "batches per epoch). Ignore this if another `fit` continues.",
        stacklevel=2,
    )


class PruningSummaries(keras.callbacks.Callback):
    """Writes the sparsity of every pruned weight to TensorBoard each epoch.

    Scalars are named `pruning/<layer>/<weight>_sparsity`, plus
    `pruning/total_sparsity` over all pruned weights. Use it next to
    `UpdatePruningStep`.

    Args:
        log_dir: Folder for the TensorBoard event files (created if needed).
        update_freq: `"epoch"`, or an int: write every that many batches.

    Example:

    ```python
    callbacks = [kc.pruning.UpdatePruningStep(),
                 kc.pruning.PruningSummaries(log_dir="logs")]
    ```
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if update_freq != "epoch" and (
            not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                "`update_freq` must be 'epoch' or a positive int; received "
                f"{update_freq!r}."
            )
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def on_train_begin(self, logs=None):
        import tensorflow as tf  # TensorBoard files need TensorFlow.

        try:
            import tensorboard  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "PruningSummaries writes TensorBoard files and needs the "
                "`tensorboard` package: pip install tensorboard"
            ) from error

        os.makedirs(self.log_dir, exist_ok=True)
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def _write(self, step):
        import tensorflow as tf

        pruners = prune_api.get_pruners(self.model)
        zeros = total = 0
        with self._writer.as_default():
            for pruner in pruners:
                for weight in pruner.weights:
                    sparsity = masks_lib.sparsity_of(weight.value)
                    size = math.prod(weight.shape)
                    zeros += sparsity * size
                    total += size
                    tf.summary.scalar(
                        f"pruning/{pruner.layer.name}/{weight.name}_sparsity",
                        sparsity,
                        step=step,
                    )
            if total:
                tf.summary.scalar(
                    "pruning/total_sparsity", zeros / total, step=step
                )
        self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if (
            self.update_freq != "epoch"
            and self._batches % self.update_freq == 0
        ):
            self._write(self._batches)

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._write(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
