"""Inputs given to a converted file, in the file's order."""

import numpy as np


def in_file_order(x, names, argument):
    """`x` as a list of arrays, one per file input, in the file's order.

    Args:
        x: An array, a list of arrays in the file's order, or a dict of
            arrays by input name (as the Keras model takes them: the
            converters name the file's inputs after the model's).
        names: The file's input names, in its order.
        argument: The argument's name, for the error message.

    Returns:
        A list of NumPy arrays.

    Raises:
        ValueError: If a dict's keys are not the file's input names.
    """
    if not isinstance(x, dict):
        inputs = list(x) if isinstance(x, (list, tuple)) else [x]
        return [np.asarray(a) for a in inputs]
    if sorted(names) != sorted(x):
        raise ValueError(
            f"`{argument}` has inputs {sorted(x)} but the file's inputs are "
            f"{sorted(names)}. Give one array per file input, by name."
        )
    return [np.asarray(x[name]) for name in names]
