"""Running a layer's own code with other values for some of its variables.

Wrappers compute a layer with masked, clustered or fake-quantized weights
by running the layer's own `call` in a `keras.StatelessScope` that maps
those variables to the new values. Every other variable of the layer is
mapped to its current value too: inside JAX's stateless train step a
variable holds no value of its own (Keras keeps it in the train loop and
maps it in an outer scope that an inner scope hides), so a partial mapping
would leave, say, a convolution's bias without one.
"""

import inspect

import keras

from keras_compress.core import keras_private

# Attribute under which an owning model keeps a layer's own `call` while
# the layer's `call` is routed through a wrapper (see `route_call`).
ORIGINAL_CALL = "_keras_compress_original_call"


def original_call(layer):
    """The layer's own `call`, also while it is routed through a wrapper."""
    return getattr(layer, ORIGINAL_CALL, None) or layer.call


def is_routed(layer):
    """Whether `layer.call` is routed through a wrapper (`route_call`)."""
    return getattr(layer, ORIGINAL_CALL, None) is not None


def call_with_values(layer, values, inputs, *args, **kwargs):
    """Runs `layer`'s own computation with `values` for some variables.

    Args:
        layer: A built layer.
        values: `{id(variable): tensor}` for variables of `layer` (or of
            its sub-layers). May be empty: the layer then runs as usual.
        inputs: The first argument of the layer's `call`.
        *args: Its other positional arguments.
        **kwargs: Its keyword arguments.

    Returns:
        The layer's outputs. Updates the layer makes to variables not in
        `values` (BatchNorm statistics, a custom layer's counters) are
        written back to them.
    """
    if not values:
        if is_routed(layer):
            return original_call(layer)(inputs, *args, **kwargs)
        return layer(inputs, *args, **kwargs)
    mapping = [
        (variable, values.get(id(variable), None))
        for variable in layer.variables
    ]
    # Read outside the new scope, where the value is known (see above).
    mapping = [
        (variable, variable.value if value is None else value)
        for variable, value in mapping
    ]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        before = {id(v): scope.get_current_value(v) for v, _ in mapping}
        outputs = original_call(layer)(inputs, *args, **kwargs)
    for variable in layer.non_trainable_variables:
        if id(variable) in values:
            continue
        value = scope.get_current_value(variable)
        if value is not None and value is not before.get(id(variable)):
            variable.assign(value)
    return outputs


def call_layer(layer, inputs, args, kwargs, *, training=None, values=None):
    """Calls `layer` as a wrapper does: `training` only if it takes one."""
    kwargs = dict(kwargs)
    if keras_private.call_has_training_arg(layer):
        kwargs["training"] = training
    else:
        kwargs.pop("training", None)
    return call_with_values(layer, values or {}, inputs, *args, **kwargs)


class RoutedCall:
    """A layer's replacement `call` that runs it through a wrapper.

    Owning models of subclassed models set it as the `call` of a layer of
    the user's model, whose own `call()` keeps calling that layer: the
    wrapper's computation then happens in place without changing the
    user's code.
    """

    def __init__(self, wrapper, first_argument="inputs"):
        self.wrapper = wrapper
        self.first_argument = first_argument

    def __call__(self, *args, training=None, **kwargs):
        # Wrappers take the layer's first argument positionally; KerasHub
        # passes it by keyword (`attention(query=x, value=x)`).
        if args:
            inputs, *args = args
        else:
            inputs = kwargs.pop(self.first_argument)
        if training is None:
            # The layer's own signature may have no `training` argument;
            # Keras keeps the value of the outermost call in its context.
            training = keras_private.current_training()
        return self.wrapper.call(inputs, *args, training=training, **kwargs)


def route_call(layer, wrapper):
    """Makes `layer.call` run through `wrapper.call` (see `RoutedCall`)."""
    if not is_routed(layer):
        object.__setattr__(layer, ORIGINAL_CALL, layer.call)
    first = next(iter(inspect.signature(original_call(layer)).parameters))
    object.__setattr__(layer, "call", RoutedCall(wrapper, first))
