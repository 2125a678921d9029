"""`OwningModel`: a technique applied to a subclassed model.

A subclassed model's forward pass is Python code that uses the layers its
`__init__` created, and loading a `.keras` file runs that `__init__` again,
so its layers cannot be swapped for wrappers. Instead an owning model owns
(a copy of) the user's model and, for each layer to compress, a wrapper
around that layer; it routes the layer's own `call` through the wrapper
(`core.stateless.route_call`), and records in its config which layers
those are (by position, see `rewrite.recorded_leaf_layers`), so that
loading re-creates the same state before the weights are restored.

`PrunedModel`, `ClusteredModel` and `QuantizedModel` are thin subclasses:
they name their entries' config key and say how to wrap one layer.
"""

import keras

from keras_compress import rewrite
from keras_compress.core import stateless


class OwningModel(keras.Model):
    """Base class of the models that compress layers of an inner model.

    Subclasses set `entries_key` (the constructor argument and config key
    that list the layers) and implement `attach(layer, entry)`.

    Args:
        model: The inner model (owned, not copied: pass a copy).
        entries: One dict per compressed layer: `"index"` (position in
            `rewrite.leaf_layers(model)`), `"class_name"` (checked on
            load), and the technique's settings.
        **kwargs: Base model arguments (`name`, ...).
    """

    entries_key = None

    def __init__(self, model, entries, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.entries = [dict(entry) for entry in entries]
        self.track_wrappers([])

    def build(self, input_shape):
        layers = rewrite.recorded_leaf_layers(
            self, self.model, self.entries, input_shape
        )
        self.build_inputs(input_shape)
        shapes = _call_input_shapes(self.model, layers, input_shape)
        wrappers = []
        for layer, entry, shape in zip(layers, self.entries, shapes):
            wrapper = self.attach(layer, entry, shape)
            stateless.route_call(layer, wrapper)
            wrappers.append(wrapper)
        self.track_wrappers(wrappers)

    def track_wrappers(self, wrappers):
        """Keeps the wrappers (tracked: their variables are saved)."""
        self.wrappers = wrappers

    def build_inputs(self, input_shape):
        """Builds what the model adds before the inner model (if anything)."""

    def attach(self, layer, entry, input_shape):
        """Returns a built wrapper of `layer` for one of `entries`.

        Args:
            layer: The inner model's layer.
            entry: Its entry.
            input_shape: The shape of the layer's first call argument in
                the inner model's forward pass (batch size None; a list of
                shapes for a layer called on a list).
        """
        raise NotImplementedError

    def call(self, inputs, *args, training=None, **kwargs):
        # A custom layer opened up in a graph (`rewrite.opens_up`) may take
        # more arguments than its input (KerasHub's `padding_mask=`).
        return self.model(inputs, *args, training=training, **kwargs)

    @classmethod
    def from_subclassed(cls, model, select, params, names):
        """Compresses the layers of a subclassed `model` that `select` picks.

        Args:
            model: A built subclassed model (not changed: a copy is owned).
            select: `select(layer) -> bool` for its leaf layers.
            params: `params(layer) -> dict`, the entry's technique settings.
            names: A list the names of the chosen layers are appended to.

        Returns:
            An instance of `cls` owning a copy of `model`, called once on
            symbolic inputs, or a plain copy if no layer was chosen.
        """
        copy, entries, chosen = rewrite.copy_with_entries(model, select, params)
        names.extend(chosen)
        if not entries:
            return copy
        owner = cls(copy, entries)
        # The original's record: a copy that built itself from its config
        # (KerasHub's TransformerDecoder) has none.
        rewrite.call_symbolically(owner, rewrite.built_input_shape(model))
        return owner

    @classmethod
    def wrap_layers(cls, model, select, wrap, params, is_unit):
        """Wraps the layers of any kind of model that `select` picks.

        The one driver of the techniques that wrap layers: in a Sequential
        or Functional model (nested ones included) each chosen layer is
        swapped for `wrap(copy of the layer, its params)`; a subclassed
        model, and a custom block inside a graph (`rewrite.opens_up`) that
        is not compressed as one unit, become an instance of `cls` that
        routes its chosen layers' calls through wrappers.

        Args:
            model: A built model (not changed).
            select: `select(layer) -> bool` for its leaf layers.
            wrap: `wrap(layer, params) -> wrapper` of a (copied) layer.
            params: The wrapper's arguments: a dict, or `params(layer) ->
                dict` for arguments that differ per layer.
            is_unit: `is_unit(layer) -> bool`: whether a custom block is
                wrapped as a whole instead of opened up.

        Returns:
            `(compressed copy of model, names of the wrapped layers)`.
        """
        names = []

        def params_of(layer):
            return params(layer) if callable(params) else params

        def replace(layer):
            if rewrite.opens_up(layer) and not is_unit(layer):
                # A subclassed model or a custom block: from the inside.
                return cls.from_subclassed(layer, select, params, names)
            if not select(layer):
                return None
            names.append(layer.name)
            return wrap(rewrite.copy_layer(layer), params_of(layer))

        if rewrite.is_graph_model(model):
            return rewrite.clone_and_replace(model, replace), names
        return cls.from_subclassed(model, select, params, names), names

    @classmethod
    def strip_layers(cls, model, wrapper_class, write, names):
        """`model` without the technique's wrappers (the inverse of
        `wrap_layers`).

        Args:
            model: A model from `wrap_layers` (or any graph model holding
                `wrapper_class` layers or `cls` models), or one wrapper.
            wrapper_class: The technique's `CompressionWrapper` class.
            write: `write(wrapper, layer_copy)`: gives the copy of a
                wrapped layer the weights the technique trained.
            names: `(strip function, apply function)`, the technique's
                public names, for the errors.

        Returns:
            A new model (or layer) of the original architecture.
        """
        strip_name, apply_name = names
        if isinstance(model, wrapper_class):
            copy = rewrite.copy_layer(model.layer)
            write(model, copy)
            return copy
        if isinstance(model, cls):
            copy = rewrite.copy_layer(model.model)
            leaves = rewrite.leaf_layers(copy)
            for entry, wrapper in zip(model.entries, model.wrappers):
                write(wrapper, leaves[entry["index"]])
            return copy
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"{strip_name}() takes a keras.Model or a "
                f"{wrapper_class.__name__} layer; received "
                f"{type(model).__name__}."
            )
        if not rewrite.is_graph_model(model):
            # Its config would re-create the wrappers.
            raise ValueError(
                f"Cannot rebuild subclassed model '{model.name}' without "
                f"its {wrapper_class.__name__} wrappers. Apply "
                f"{apply_name}(model) to the whole model instead, which "
                "strips to the original class."
            )

        def unwrap(layer):
            if isinstance(layer, (wrapper_class, cls)):
                return cls.strip_layers(layer, wrapper_class, write, names)
            return None

        return rewrite.clone_and_replace(model, unwrap)

    @staticmethod
    def wrapper_arguments(entry):
        """The wrapper's constructor arguments held in `entry`."""
        return {
            k: v for k, v in entry.items() if k not in ("index", "class_name")
        }

    def serialized_entries(self):
        """`entries`, with their Keras objects serialized (for the config)."""
        return [dict(entry) for entry in self.entries]

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            self.entries_key: self.serialized_entries(),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)


class _InputShapeRecorder:
    """A layer's `call` that records the shape of its first argument."""

    def __init__(self, call):
        self.call = call
        self.shape = None

    def __call__(self, *args, **kwargs):
        # The first argument, also when passed by keyword (KerasHub calls
        # its attention layers with `query=`).
        inputs = args[0] if args else next(iter(kwargs.values()))
        if self.shape is None:
            self.shape = keras.tree.map_structure(
                lambda t: (None,) + tuple(t.shape)[1:], inputs
            )
        return self.call(*args, **kwargs)


def _call_input_shapes(model, layers, input_shape):
    """The input shape of each of `layers` in `model`'s forward pass.

    Found by running `model` on symbolic inputs with each layer's `call`
    recording what it gets: a layer's build config does not always hold
    it (weightless layers such as GlobalAveragePooling2D record none).
    """
    recorders = []
    for layer in layers:
        recorder = _InputShapeRecorder(stateless.original_call(layer))
        object.__setattr__(layer, "call", recorder)
        recorders.append(recorder)
    try:
        model.compute_output_spec(rewrite.symbolic_inputs(input_shape))
    finally:
        for layer, recorder in zip(layers, recorders):
            object.__setattr__(layer, "call", recorder.call)
    for layer, recorder in zip(layers, recorders):
        if recorder.shape is None:
            # A layer with its own `compute_output_spec` (MultiHeadAttention)
            # is not run on symbolic inputs; its build config has the shape.
            recorder.shape = rewrite.built_input_shape(layer)
        if recorder.shape is None:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) of "
                f"'{model.name}' is not called in its forward pass, so it "
                "cannot be compressed. Leave it out of the layers to "
                "compress."
            )
    return [recorder.shape for recorder in recorders]
