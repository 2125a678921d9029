"""A Keras model's inference pass as one TensorFlow function.

Both converters read the same traced graph: `to_onnx` hands the
`tf.function` to tf2onnx, `to_tflite` hands its concrete function to
LiteRT's converter. Tracing it here, rather than through `Model.export`,
keeps the conversion in memory: `Model.export` writes a SavedModel (and
Keras's export archive walks every trackable of the model) that the
LiteRT converter then reads back, which is 3 to 4 times the conversion
time of a small model.
"""

import re

import keras

from keras_compress.core import tracing


def input_specs(model, batch="declared"):
    """One named `tf.TensorSpec` per model input, in the model's order.

    Args:
        model: A built `keras.Model`. A subclassed one must have been
            called on data (Keras records the shapes of the first call).
        batch: `"declared"`: the batch size the model's inputs declare
            (`None`, any, for a subclassed model); `None`: any batch size;
            `"fixed"`: the declared one, or 1 where it is `None`.

    Returns:
        A list of `tf.TensorSpec`.
    """
    import tensorflow as tf

    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        shapes = [tuple(t.shape) for t in inputs]
        dtypes = [str(t.dtype) for t in inputs]
        names = [_spec_name(t.name, i) for i, t in enumerate(inputs)]
    else:
        shapes = _subclassed_input_shapes(model)
        dtypes = [model.input_dtype] * len(shapes)
        names = [
            "input" if len(shapes) == 1 else f"input_{i}"
            for i in range(len(shapes))
        ]
    specs = []
    for shape, dtype, name in zip(shapes, dtypes, names):
        size = shape[0]
        if batch is None:
            size = None
        elif batch == "fixed":
            size = size or 1
        specs.append(tf.TensorSpec((size, *shape[1:]), dtype, name=name))
    return specs


def serving_function(model, specs):
    """The model's inference pass as a `tf.function` of `specs`.

    It returns a dict of the model's outputs: the model's own dict where
    it returns one, else `{"output_0": ..., "output_1": ...}`, the numbers
    padded so that the keys' sorted order (the order TensorFlow flattens a
    dict in, and the converted files' output order) is the model's order.

    Args:
        model: A built `keras.Model`.
        specs: Its inputs, from `input_specs`.

    Returns:
        A `tf.function` with `specs` as its input signature.
    """
    import tensorflow as tf

    structure = _input_structure(model, len(specs))

    @tf.function(input_signature=specs, autograph=False)
    def serve(*inputs):
        if structure is not None:
            arguments = keras.tree.pack_sequence_as(structure, list(inputs))
        else:
            arguments = inputs[0] if len(inputs) == 1 else list(inputs)
        with tracing.converter_trace():
            outputs = model(arguments, training=False)
        if isinstance(outputs, dict) and all(
            isinstance(key, str) and tf.is_tensor(value)
            for key, value in outputs.items()
        ):
            return dict(outputs)  # named by the model
        flat = tf.nest.flatten(outputs)
        width = len(str(len(flat) - 1))
        return {f"output_{i:0{width}d}": t for i, t in enumerate(flat)}

    return serve


def _input_structure(model, num_inputs):
    """How a Functional model takes its inputs (a dict, a list, ...), or
    `None` where a tensor or a flat list of tensors is right."""
    try:
        structure = model.input
    except (AttributeError, ValueError):
        return None  # subclassed, or a Sequential never called
    if len(keras.tree.flatten(structure)) != num_inputs:
        return None
    return structure


def _spec_name(name, index):
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name or "")
    return name if re.match(r"[A-Za-z]", name) else f"input_{index}"


def _subclassed_input_shapes(model):
    # A subclassed model has no `inputs`. Keras records the shapes of the
    # first call in `_build_shapes_dict`; its own exporter reads the same
    # record (`keras.src.export.export_utils`), and there is no public one.
    recorded = getattr(model, "_build_shapes_dict", None)
    if not model.built or not recorded:
        raise ValueError(
            f"Cannot tell the input shape of model '{model.name}' "
            f"({type(model).__name__}): it has no `inputs` and has not been "
            "called on data. Call it once on a batch, e.g. "
            "`model(x[:1])`, before converting."
        )
    shapes = list(recorded.values())
    if len(shapes) == 1 and not is_shape(shapes[0]):
        shapes = list(shapes[0])  # call(inputs) with a list of tensors
    if not all(is_shape(s) for s in shapes):
        raise ValueError(
            f"Model '{model.name}' takes nested inputs {recorded}; it can "
            "be converted with one tensor or a flat list of tensors per "
            "call."
        )
    # The recorded batch size is that of the first call, not a declared one.
    return [(None, *s[1:]) for s in shapes]


def is_shape(value):
    """Whether `value` is a shape: a list or tuple of ints and `None`s."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(d, (int, type(None))) for d in value
    )
