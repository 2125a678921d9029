"""Naming the Keras layer behind an op of a traced graph."""

import re

from keras_compress import rewrite

# A trailing "_<n>" that TensorFlow adds to repeated name scopes.
_SCOPE_SUFFIX = re.compile(r"_\d+$")


def layer_for_op(model, op_path):
    """The layer whose call created the op at `op_path`, as a string.

    TensorFlow names an op after the name scopes it was created in, and
    Keras opens one scope per layer call, so `"model_1/my_layer_1/op/Op"`
    was made by the layer `my_layer`. The deepest scope that names a layer
    of `model` wins.

    Args:
        model: The Keras model that was traced.
        op_path: The op's full name.

    Returns:
        `"'path/to/layer' (ClassName)"`, or `None` if no scope names a layer.
    """
    layers = {}
    for path, layer in rewrite.iter_layers(model, include_models=True):
        layers.setdefault(layer.name, (path, layer))
    scopes = op_path.split("/")[:-1]
    for scope in reversed(scopes):
        for name in (scope, _SCOPE_SUFFIX.sub("", scope)):
            if name in layers:
                path, layer = layers[name]
                return f"'{path}' ({type(layer).__name__})"
    return None
