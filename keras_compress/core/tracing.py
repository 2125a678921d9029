"""Whether the model is being traced for a converter.

A few computations exist only to make Keras round the way a LiteRT kernel
does (e.g. the ties of an int8 average pooling); the kernel does that by
itself, so the converted graph must not contain them. The converters
trace the model inside `converter_trace()`, and such code asks
`in_converter_trace()`.
"""

import contextlib
import threading

_STATE = threading.local()


@contextlib.contextmanager
def converter_trace():
    """A context in which the model's graph is traced for a converter.

    Example:

    ```python
    with converter_trace():
        outputs = model(inputs, training=False)  # inside a tf.function
    ```
    """
    previous = getattr(_STATE, "active", False)
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = previous


def in_converter_trace():
    """True while a converter traces the model (see `converter_trace`).

    Returns:
        A bool.
    """
    return getattr(_STATE, "active", False)
