"""The output folder of a `compress()` run: checked first, resumed safely.

`compress()` writes its delivered file, reports and each stage's model to
one folder. Three rules keep a user's results from being lost or mixed:

- The folder is checked before any training: it must be writable, and a
  folder that already holds results is refused unless the call says what
  to do with them (`overwrite=True` or `resume=True`).
- Every run records a fingerprint of what determines its stages: the
  model (architecture and weights), the data, the recipe and the options
  (`run.json`). `resume=True` reuses stages only when the fingerprint is
  the same, and otherwise says what differs.
- Results are replaced only by an explicit `overwrite=True`, which clears
  the old stages first so that a later resume cannot pick them up.
"""

import hashlib
import json
import os

import numpy as np

from keras_compress.convert import _files

FINGERPRINT_FILE = "run.json"
STAGES = "stages"
# What a finished or interrupted run leaves in its folder.
_RESULT_NAMES = (
    FINGERPRINT_FILE,
    "model.tflite",
    "model.onnx",
    "report.json",
    "report.md",
    "report.html",
    "stages.png",
    "sensitivity.png",
    "recipe.json",
    "sensitivity.json",
)
# Bumped when stage files or their meaning change, so that a run of an
# older version is not resumed.
_FORMAT = 1


def prepare(folder, fingerprint, *, resume, overwrite):
    """Checks and sets up `folder` before a run; records its fingerprint.

    Args:
        folder: The `output` folder (created if missing).
        fingerprint: A dict `{part: hash}` from `fingerprint()`.
        resume: Whether the caller wants to reuse earlier stages.
        overwrite: Whether earlier results may be replaced.

    Raises:
        ValueError: If the folder cannot be written, holds results that
            neither `resume` nor `overwrite` allows touching, or holds a
            run that does not match `fingerprint` under `resume`.
    """
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(
            f"`output`={folder!r} is a file; give a folder for the results."
        )
    try:
        os.makedirs(os.path.join(folder, STAGES), exist_ok=True)
        # Write something now rather than find out after the training.
        _files.probe_writable(os.path.join(folder, STAGES))
    except OSError as error:
        raise ValueError(
            f"`output`={folder!r} cannot be written ({error.strerror or error})"
            ". Choose a folder you can write to."
        ) from error
    found = existing_results(folder)
    if resume:
        _check_same_run(folder, fingerprint, found)
    elif found:
        if not overwrite:
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            raise ValueError(
                f"`output`={folder!r} already holds the results of a "
                f"compress() run ({shown}). Pass `overwrite=True` to replace "
                "them, `resume=True` to continue that run, or another folder."
            )
        _clear(folder, found)
    record = {"format": _FORMAT, **fingerprint}
    _files.write_atomically(
        os.path.join(folder, FINGERPRINT_FILE),
        (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8"),
    )


def existing_results(folder):
    """The names of earlier results in `folder` (stage files included)."""
    found = [
        name
        for name in _RESULT_NAMES
        if os.path.exists(os.path.join(folder, name))
    ]
    stages = os.path.join(folder, STAGES)
    if os.path.isdir(stages):
        found += [
            f"{STAGES}/{name}"
            for name in sorted(os.listdir(stages))
            if name.endswith(".keras")
        ]
    return found


def _check_same_run(folder, fingerprint, found):
    path = os.path.join(folder, FINGERPRINT_FILE)
    if not found:
        return  # Nothing to resume: a fresh run.
    if not os.path.exists(path):
        raise ValueError(
            f"`resume=True`, but `output`={folder!r} has no {FINGERPRINT_FILE}"
            " saying which model, data and recipe its stages came from (it "
            "was written by an older keras_compress or by hand), so they "
            "cannot be trusted. Pass `overwrite=True` to start over there."
        )
    with open(path) as file:
        try:
            recorded = json.load(file)
        except json.JSONDecodeError:
            recorded = {}
    if recorded.get("format") != _FORMAT:
        different = ["the keras_compress version that wrote it"]
    else:
        different = [
            part
            for part in sorted(set(fingerprint) | set(recorded) - {"format"})
            if recorded.get(part) != fingerprint.get(part)
        ]
    if different:
        raise ValueError(
            f"`resume=True`, but the run in `output`={folder!r} differs from "
            f"this call in: {', '.join(different)}. Its stages would not be "
            "this call's. Pass the same arguments to resume, or "
            "`overwrite=True` (or another folder) to start over."
        )


def _clear(folder, found):
    for name in found:
        os.remove(os.path.join(folder, name))


def fingerprint(
    model, train_data, val_data, recipe, options, teacher=None, loss=None
):
    """Hashes of everything that determines a run's stages.

    Args:
        model: The user's model: its architecture and weights.
        train_data: `(x, y)` arrays or a `tf.data.Dataset` (its element
            spec, length and first batches: reading all of it would cost an
            epoch).
        val_data: `(x, y)` arrays.
        recipe: A `Recipe` config dict, or `None` for a built recipe.
        options: A dict of the other arguments that change results.
        teacher: The teacher model, or `None` (or the model itself).
        loss: The training loss.

    Returns:
        A dict `{part: hex digest}`, JSON-serializable.
    """
    parts = {
        "model": model_digest(model),
        "train_data": _data_digest(train_data),
        "val_data": _data_digest(val_data),
        "recipe": _json_digest(recipe),
        "options": _json_digest({**options, "loss": _keras_config(loss)}),
    }
    if teacher is not None and teacher is not model:
        parts["teacher"] = model_digest(teacher)
    return parts


def model_digest(model):
    """A hash of a model's architecture and weights."""
    digest = hashlib.sha256()
    digest.update(_json_text(_keras_config(model)).encode("utf-8"))
    for weight in model.weights:
        digest.update(weight.path.encode("utf-8"))
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy())))
    return digest.hexdigest()


def _data_digest(data):
    import tensorflow as tf

    digest = hashlib.sha256()
    if isinstance(data, tf.data.Dataset):
        digest.update(repr(data.element_spec).encode("utf-8"))
        digest.update(str(int(data.cardinality())).encode("utf-8"))
        for element in data.take(4).as_numpy_iterator():
            for array in tf.nest.flatten(element):
                _update_array(digest, array)
        return digest.hexdigest()
    for array in tf.nest.flatten(data):
        _update_array(digest, array)
    return digest.hexdigest()


def _update_array(digest, array):
    array = np.ascontiguousarray(np.asarray(array))
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array)


def _keras_config(obj):
    if obj is None:
        return None
    import keras

    try:
        return keras.saving.serialize_keras_object(obj)
    except Exception:  # An object Keras cannot serialize: its type.
        return type(obj).__qualname__


def _json_text(value):
    return json.dumps(value, sort_keys=True, default=repr)


def _json_digest(value):
    return hashlib.sha256(_json_text(value).encode("utf-8")).hexdigest()
