"""Checks of the data a user hands in, before anything runs on it.

Data enters keras_compress in a few places: calibration samples
(`to_tflite`), training and validation data (`compress()`), the inputs and
labels of `verify()` and the command line's `.npz` files. Bad data there
does not fail loudly on its own: one `inf` in calibration data crashes the
converter, NaN inputs give a float file or meaningless ranges, labels
outside the model's classes give an accuracy of 0 that a budget then
"meets". Every entry point calls these checks first; each raises a
one-line `ValueError` naming the argument and saying what to do.
"""

import warnings

import numpy as np


def check_inputs(x, argument):
    """Checks model inputs: numeric, non-empty and finite.

    Args:
        x: A NumPy-compatible array (batch first), or a list/tuple/dict of
            them for a model with several inputs.
        argument: The argument's name for messages, e.g. `"val_data"`.

    Raises:
        ValueError: If `x` is empty, not numeric or holds NaN or infinity.
    """
    for name, array in _named_arrays(x, argument):
        array = np.asarray(array)
        if array.ndim == 0 or len(array) == 0:
            raise ValueError(f"`{name}` is empty: it has no samples.")
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"`{name}` has dtype {array.dtype}; model inputs must be "
                "numbers (bool, integer or float arrays)."
            )
        _check_finite(array, name)


def check_labels(y, argument, num_samples=None, num_classes=None):
    """Checks class labels and returns them as integers, one per sample.

    Args:
        y: Integer class labels, shape `(n,)` or `(n, 1)`, or one-hot
            labels of shape `(n, classes)`.
        argument: The argument's name for messages.
        num_samples: The number of input samples the labels must match, or
            `None` not to check.
        num_classes: The model's number of classes (see `num_classes`), or
            `None` not to check the range.

    Returns:
        An int64 array of shape `(n,)`.

    Raises:
        ValueError: If the labels are empty, not whole numbers, negative,
            not below `num_classes` or not one per sample.
    """
    y = np.asarray(y)
    if y.ndim == 0 or len(y) == 0:
        raise ValueError(f"`{argument}` has no labels.")
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"`{argument}` has dtype {y.dtype}; labels must be integer "
            "class indices (or one-hot rows)."
        )
    _check_finite(y, argument)
    if y.ndim == 2 and y.shape[1] > 1:
        y = np.argmax(y, axis=1)  # one-hot rows
    elif y.ndim > 1 and all(d == 1 for d in y.shape[1:]):
        y = y.reshape(len(y))
    if y.ndim != 1:
        raise ValueError(
            f"`{argument}` has shape {y.shape}; expected one integer label "
            "per sample, shape (n,), or one-hot rows, shape (n, classes)."
        )
    if np.any(np.mod(y, 1) != 0):
        raise ValueError(
            f"`{argument}` holds fractional values (e.g. "
            f"{y[np.mod(y, 1) != 0][0]!r}); labels must be whole class "
            "indices."
        )
    if num_samples is not None and len(y) != num_samples:
        raise ValueError(
            f"`{argument}` has {len(y)} labels but there are {num_samples} "
            "input samples; give one label per sample."
        )
    low, high = y.min(), y.max()
    if low < 0 or (num_classes is not None and high >= num_classes):
        allowed = (
            "non-negative"
            if num_classes is None
            else f"in [0, {num_classes - 1}] (the model has {num_classes} "
            "classes)"
        )
        raise ValueError(
            f"`{argument}` has labels from {low:g} to {high:g}, but labels "
            f"must be {allowed}. Check that the labels belong to this model "
            "(e.g. not 1-based or from another data set)."
        )
    return y.astype(np.int64)


def num_classes(model):
    """The number of classes of a single-output classifier, or `None`.

    Args:
        model: A built Keras model.

    Returns:
        The size of the output's last axis (2 for a single sigmoid unit),
        or `None` when the output shape is unknown or not a vector per
        sample.
    """
    try:
        shape = model.outputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        try:
            shape = model.compute_output_shape(
                (model.get_build_config() or {})["input_shape"]
            )
        except Exception:  # A subclassed model that cannot say.
            return None
    units = shape[-1] if len(shape) >= 2 else None
    if not isinstance(units, (int, np.integer)):
        return None  # Unknown, or several outputs.
    return 2 if units == 1 else int(units)


def warn_if_uninformative(samples, argument):
    """Warns when calibration samples cannot give activation ranges.

    All-zero or identical samples let the converter calibrate ranges that
    the real inputs will overflow, so the file disagrees with Keras.

    Args:
        samples: A list of calibration samples, each a list of arrays.
        argument: The argument's name for the message.
    """
    first = samples[0]
    if all(not np.any(a) for sample in samples for a in sample):
        reason = "every value is zero"
    elif len(samples) > 1 and all(
        np.array_equal(a, b)
        for sample in samples[1:]
        for a, b in zip(sample, first)
    ):
        reason = f"all {len(samples)} samples are identical"
    else:
        return
    warnings.warn(
        f"`{argument}`: {reason}, so the activation ranges calibrated on it "
        "will not cover real inputs and the file will disagree with the "
        "model. Calibrate on a few hundred real training inputs.",
        stacklevel=4,  # The caller of to_tflite.
    )


def _check_finite(array, name):
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = array.size - int(np.count_nonzero(finite))
    where = np.argwhere(~finite)[0]
    kinds = " and ".join(
        kind
        for kind, found in (
            ("NaN", np.isnan(array).any()),
            ("infinity", np.isinf(array).any()),
        )
        if found
    )
    raise ValueError(
        f"`{name}` holds {bad:,} non-finite value(s) ({kinds}; the first in "
        f"sample {int(where[0])}). Replace or drop those samples: "
        "calibration, training and comparisons need finite numbers."
    )


def _named_arrays(x, argument):
    if isinstance(x, dict):
        return [(f"{argument}[{key!r}]", v) for key, v in x.items()]
    if isinstance(x, (list, tuple)) and x and not _is_number(x[0]):
        if len(x) == 1:
            return [(argument, x[0])]
        return [(f"{argument}[{i}]", v) for i, v in enumerate(x)]
    return [(argument, x)]


def _is_number(value):
    return isinstance(value, (int, float, np.number))
