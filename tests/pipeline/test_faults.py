"""Fault injection: interrupt compress() and the writers, lose nothing.

Each case breaks a run at one point — a `KeyboardInterrupt` in the middle
of a training step, an error in a conversion, a full disk while a file is
written — and then checks what a user would find: no partial file at any
path the run writes, the user's model unchanged, and `resume=True`
finishing with the same file as a run that was never interrupted.
"""

import errno
import os

import keras
import numpy as np
import pytest

from keras_compress import convert
from keras_compress import pipeline
from keras_compress.convert import _files
from keras_compress.pipeline import steps as steps_lib
from keras_compress.pipeline import targets as targets_lib

ARGUMENTS = dict(
    target="tflite-int8",
    max_accuracy_drop=0.5,
    epochs=1,
    latency_runs=0,
    verbose=0,
    seed=7,
)


def _recipe():
    return [pipeline.Prune(0.5, epochs=1), pipeline.QuantizeAware(epochs=1)]


@pytest.fixture(scope="module")
def uninterrupted(task, tmp_path_factory):
    """The delivered bytes of a run that nothing interrupted."""
    model, train, val = task
    output = tmp_path_factory.mktemp("uninterrupted")
    result = pipeline.compress(
        model, train, val, recipe=_recipe(), output=str(output), **ARGUMENTS
    )
    return result.content


class _RaiseAtBatch(keras.callbacks.Callback):
    def __init__(self, batch, error):
        super().__init__()
        self.batch = batch
        self.error = error

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise self.error


def _interrupt_training(monkeypatch, step, batch):
    """Raises KeyboardInterrupt after `batch` of the `step`-th fit."""
    original = steps_lib.TrainingContext.fit
    calls = []

    def fit(self, model, epochs, learning_rate, callbacks=()):
        calls.append(None)
        if len(calls) == step:
            callbacks = [*callbacks, _RaiseAtBatch(batch, KeyboardInterrupt())]
        return original(self, model, epochs, learning_rate, callbacks)

    monkeypatch.setattr(steps_lib.TrainingContext, "fit", fit)


def _fail_conversion(monkeypatch, call):
    """The `call`-th conversion raises (1 is the original model's)."""
    original = targets_lib.convert_to_target
    calls = []

    def convert_to_target(*args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            raise RuntimeError("injected converter failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(targets_lib, "convert_to_target", convert_to_target)


def _fill_disk(monkeypatch, name):
    """Writing the file `name` fails with ENOSPC after its first bytes."""
    original = os.fdopen

    class FullFile:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.file.close()

        def write(self, content):
            self.file.write(content[:10])  # a partial file on disk
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd, *args, **kwargs):
        file = original(fd, *args, **kwargs)
        if f".{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            return FullFile(file)
        return file

    monkeypatch.setattr(_files.os, "fdopen", fdopen)


def _written_files(folder):
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)


# One break per stage of the run (each case costs two compress() runs):
# mid-training after a stage was saved, between the training and its file,
# and at the very last write.
FAULTS = {
    "interrupt step 2 at batch 4": (
        lambda mp: _interrupt_training(mp, step=2, batch=4),
        KeyboardInterrupt,
    ),
    "converter fails after step 1": (
        lambda mp: _fail_conversion(mp, call=2),
        RuntimeError,
    ),
    "disk full writing the delivered file": (
        lambda mp: _fill_disk(mp, "model.tflite"),
        OSError,
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_run_loses_nothing_and_resumes_to_the_same_file(
    task, tmp_path, monkeypatch, uninterrupted, fault
):
    model, train, val = task
    weights = [np.copy(w) for w in model.get_weights()]
    inject, error = FAULTS[fault]
    with monkeypatch.context() as patch:
        inject(patch)
        with pytest.raises(error):
            pipeline.compress(
                model,
                train,
                val,
                recipe=_recipe(),
                output=str(tmp_path),
                **ARGUMENTS,
            )
    written = _written_files(tmp_path)
    # No partial file: nothing half-written, no delivered file yet.
    assert not [name for name in written if ".tmp" in name], written
    assert "model.tflite" not in written
    for name in written:
        if name.endswith(".keras"):
            keras.saving.load_model(tmp_path / name)  # whole, loadable
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)

    result = pipeline.compress(
        model,
        train,
        val,
        recipe=_recipe(),
        output=str(tmp_path),
        resume=True,
        **ARGUMENTS,
    )
    assert result.content == uninterrupted
    assert (tmp_path / "model.tflite").read_bytes() == uninterrupted


@pytest.mark.parametrize("converter", ["tflite", "onnx"])
def test_a_failed_write_keeps_the_old_file(
    task, tmp_path, monkeypatch, converter
):
    model, _, _ = task
    path = tmp_path / f"model.{converter}"
    path.write_bytes(b"the user's earlier file")
    _fill_disk(monkeypatch, path.name)
    with pytest.raises(OSError, match="No space left"):
        if converter == "tflite":
            convert.to_tflite(model, path=str(path))
        else:
            convert.to_onnx(model, str(path))
    assert path.read_bytes() == b"the user's earlier file"
    assert _written_files(tmp_path) == [path.name]


def test_an_interrupted_conversion_leaves_no_file_and_stderr_intact(
    task, tmp_path, monkeypatch
):
    from keras_compress.convert import tflite

    model, _, _ = task
    stderr_before = os.fstat(2)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Between the export and the converter's run, inside the log capture.
    monkeypatch.setattr(tflite, "_configure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert.to_tflite(model, path=str(tmp_path / "model.tflite"))
    assert _written_files(tmp_path) == []
    # The native-log capture handed file descriptor 2 back.
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (
        stderr_before.st_dev,
        stderr_before.st_ino,
    )
