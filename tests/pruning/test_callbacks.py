import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_compress import pruning
from tests import helpers


def _read_scalars(log_dir):
    scalars = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                scalars.setdefault(value.tag, []).append(float(tensor))
    return scalars


def test_pruning_summaries_write_per_layer_and_total_sparsity(tmp_path):
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(
        model,
        pruning_schedule=pruning.PolynomialDecay(0, 0.5, 0, 8, frequency=1),
    )
    helpers.compile_for_test(pruned)
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        verbose=0,
        callbacks=[
            pruning.UpdatePruningStep(),
            pruning.PruningSummaries(str(tmp_path)),
        ],
    )
    scalars = _read_scalars(tmp_path)
    assert "pruning/fc1/kernel_sparsity" in scalars
    total = scalars["pruning/total_sparsity"]
    assert len(total) == 3
    assert total == sorted(total) and total[-1] == pytest.approx(0.5, 0.02)


def test_update_step_counts_batches_across_fits():
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(model)
    helpers.compile_for_test(pruned)
    for _ in range(2):
        pruned.fit(
            x,
            y,
            batch_size=16,
            epochs=1,
            verbose=0,
            callbacks=[pruning.UpdatePruningStep()],
        )
    steps = {int(p.step.numpy()) for p in pruning.get_pruners(pruned)}
    assert steps == {7}  # 2 fits x 4 batches, counted from 0


@pytest.mark.parametrize("end_step, warns", [(400, True), (3, False)])
def test_a_schedule_that_fit_cannot_finish_warns(end_step, warns, recwarn):
    model, x, y = helpers.make_model("functional")
    schedule = pruning.PolynomialDecay(0.0, 0.8, 0, end_step, frequency=1)
    pruned = pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    helpers.compile_for_test(pruned)
    callback = pruning.UpdatePruningStep()
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[callback])
    messages = [str(w.message) for w in recwarn.list]
    unfinished = [m for m in messages if "stopped before its schedule" in m]
    assert bool(unfinished) == warns, messages
    if warns:
        # 4 batches of 400 steps: the sparsity reached, not the one asked.
        assert "ran to step 3" in unfinished[0]  # counted from 0
        assert "ends at step 400" in unfinished[0]
        assert "instead of 80%" in unfinished[0]


def test_update_step_on_a_model_without_pruning_raises():
    model, x, y = helpers.make_model("functional")
    helpers.compile_for_test(model)
    with pytest.raises(ValueError, match="no pruned layers"):
        model.fit(x, y, verbose=0, callbacks=[pruning.UpdatePruningStep()])


def test_custom_training_loop_with_the_callback():
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=1)
    )
    optimizer = keras.optimizers.Adam(1e-2)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    callback = pruning.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    for batch in range(4):
        callback.on_train_batch_begin(batch)
        xb, yb = (
            x[batch * 16 : (batch + 1) * 16],
            y[batch * 16 : (batch + 1) * 16],
        )
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, pruned(xb, training=True))
        grads = tape.gradient(loss, pruned.trainable_variables)
        optimizer.apply(grads, pruned.trainable_variables)
    callback.on_train_end()
    for pruner in pruning.get_pruners(pruned):
        kernel = pruner.weights[0].numpy()
        assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.02)
    assert np.isfinite(pruned.predict(x, verbose=0)).all()
