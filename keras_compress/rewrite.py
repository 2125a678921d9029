"""Walking and rewriting Keras models of every kind.

This module is the one place that knows how models are put together:

- `iter_layers(model)` lists every leaf layer of any model, including layers
  of nested and subclassed models, with a readable path.
- `copy_layer(layer)` makes an independent, built copy of a layer (or of a
  whole model) holding the same weights.
- `clone_and_replace(model, replace_fn)` returns a copy of a Sequential or
  Functional model (nested ones included) in which `replace_fn` may swap any
  layer for another one, e.g. a wrapper around a copy.
- `graph_calls(model)` lists the layer calls of a Sequential or Functional
  graph in order, with who consumes each tensor: what BatchNorm folding,
  QAT planning and channel grouping need to follow the graph.

Nothing here modifies the model it is given.
"""

import collections
import dataclasses
import inspect

import keras

from keras_compress.core import keras_private


def is_graph_model(model):
    """True for Sequential and Functional models (whose graph is known)."""
    return isinstance(model, (keras.Sequential, keras_private.Functional))


def opens_up(layer):
    """True for a layer that techniques compress from the inside.

    That is a nested subclassed model, or a custom layer made of other
    layers (KerasHub's `TransformerEncoder`, a user's residual block): its
    forward pass is Python code, so its sub-layers are compressed where they
    are, as in a subclassed model (`core.OwningModel`). Keras's own
    composite layers (MultiHeadAttention, RNN, Bidirectional, ...) are
    units each technique knows as a whole, and are not opened.
    """
    if isinstance(layer, keras.Model):
        return not is_graph_model(layer)
    for cls in type(layer).__mro__:
        if cls.__module__.split(".")[0] == "keras":
            if cls is not keras.layers.Layer:
                # A Keras layer or a subclass of one (KerasHub's
                # CachedMultiHeadAttention is a MultiHeadAttention).
                return False
            break
    return any(
        child.weights
        for child in keras_private.child_layers(layer)
        if isinstance(child, keras.layers.Layer)
    )


def check_built(model, argument="model"):
    """Raises a ValueError unless `model` has been built."""
    if not model.built:
        raise ValueError(
            f"`{argument}` ('{model.name}', {type(model).__name__}) has not "
            "been built, so its weights do not exist yet. Build it first: "
            "give it a keras.Input, call it on a batch of data, or call "
            "model.build(input_shape)."
        )


def iter_layers(model, include_models=False):
    """Yields `(path, layer)` for every layer inside `model`, depth first.

    Paths join layer names with "/" (e.g. `"encoder/dense_1"`). Layers of
    nested models and attributes of subclassed models are included; each
    layer object appears once even if it is shared.

    Args:
        model: A `keras.Model` or layer.
        include_models: Also yield the nested models themselves.

    Yields:
        `(str, keras.layers.Layer)` tuples.
    """
    seen = set()

    def walk(layer, prefix):
        for child in keras_private.child_layers(layer):
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            path = f"{prefix}{child.name}"
            is_container = bool(keras_private.child_layers(child))
            if not is_container or include_models:
                yield path, child
            if is_container:
                yield from walk(child, path + "/")

    yield from walk(model, "")


def leaf_layers(model):
    """Layers with no sub-layers of their own, in a stable order.

    Unlike `iter_layers`, composite layers such as MultiHeadAttention or
    RNN are kept whole (they are the units a technique wraps). The order is
    that of Keras's layer tracking, which is the same for two instances
    of the same subclassed model built the same way.
    """
    return [
        layer
        for layer in keras_private.flatten_layers(model, include_self=False)
        if not isinstance(layer, (keras.Model, keras.layers.InputLayer))
    ]


def check_is_model(model, argument="model"):
    """Raises a TypeError unless `model` is a `keras.Model`."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{argument}` must be a keras.Model, got "
            f"{type(model).__name__}: {model!r}."
        )


def layer_selector(choice, all_layers, argument, default, check_named):
    """Turns a `layers_to_*` argument into `(select(layer) -> bool, names)`.

    Args:
        choice: `None` (use `default`), a callable `f(layer) -> bool`, a
            layer name, or a list of layer names.
        all_layers: The layers names may refer to.
        argument: The argument's name, for error messages.
        default: `select` when `choice` is `None`.
        check_named: Called on each named layer; raises a ValueError if the
            technique cannot apply to it.

    Returns:
        `(select, names)`: the predicate, and the set of names given (empty
        unless `choice` lists names).

    Raises:
        ValueError: If a name is not one of `all_layers`.
    """
    if choice is None:
        return default, set()
    if callable(choice):
        return lambda layer: bool(choice(layer)), set()
    if isinstance(choice, str):
        choice = [choice]
    names = set(choice)
    by_name = {layer.name: layer for layer in all_layers}
    missing = sorted(names - set(by_name))
    if missing:
        raise ValueError(
            f"{argument} names {missing}, which are not layers of the "
            f"model. Layers: {sorted(by_name)}."
        )
    for name in sorted(names):
        check_named(by_name[name])
    return lambda layer: layer.name in names, names


def copy_with_entries(model, select, params):
    """Copies a subclassed model and records which leaf layers `select` picks.

    The entries are what an owning model (`PrunedModel`, `ClusteredModel`)
    keeps in its config to find the same layers again after loading, by
    position in `leaf_layers` (see `recorded_leaf_layers`).

    Args:
        model: A built subclassed model. It is not changed.
        select: `select(layer) -> bool` on the leaf layers of `model`.
        params: Settings added to every entry, or a callable
            `params(layer) -> dict` for settings that differ per layer.

    Returns:
        `(copy, entries, names)`: an independent copy of `model`, one entry
        `{"index", "class_name", **params}` per selected leaf layer of the
        copy, and the selected layers' names.
    """
    copy = copy_layer(model)
    entries, names = [], []
    inside_chosen = set()
    for index, (original, copied) in enumerate(
        zip(leaf_layers(model), leaf_layers(copy))
    ):
        if id(original) in inside_chosen:
            # Part of a chosen unit (a MultiHeadAttention's projections):
            # compressed with it, not a second time on its own.
            continue
        if select(original):
            inside_chosen.update(
                id(sub)
                for sub in keras_private.flatten_layers(
                    original, include_self=False
                )
            )
            settings = params(original) if callable(params) else params
            entries.append(
                {
                    "index": index,
                    "class_name": type(copied).__name__,
                    **settings,
                }
            )
            names.append(original.name)
    return copy, entries, names


def recorded_leaf_layers(owner, model, entries, input_shape):
    """Builds `model` if needed and finds the layers `entries` recorded.

    Subclassed models have no graph to name their layers by, so a model
    that owns one (`PrunedModel`, `QuantizedModel`) records a layer by its
    position in `leaf_layers(model)`, which is the same for every instance
    built the same way, plus its class name as a check.

    Args:
        owner: The model that recorded them (named in errors).
        model: The subclassed model, possibly not built yet (e.g. when
            the owner is being loaded from a `.keras` file).
        entries: Dicts with `"index"` and `"class_name"`.
        input_shape: What `owner.build` was given.

    Returns:
        The leaf layers, one per entry.

    Raises:
        ValueError: If a recorded position holds another class, i.e. the
            model class now creates its layers differently.
    """
    if not model.built:
        call_symbolically(model, input_shape)
    leaves = leaf_layers(model)
    layers = []
    for entry in entries:
        index = entry["index"]
        found = type(leaves[index]).__name__ if index < len(leaves) else None
        if found != entry["class_name"]:
            raise ValueError(
                f"{type(owner).__name__} '{owner.name}': expected a "
                f"{entry['class_name']} at layer position {index} of "
                f"'{model.name}' but found {found or 'nothing'}. The model "
                "class creates its layers differently from when this model "
                "was made from it."
            )
        layers.append(leaves[index])
    return layers


def copy_layer(layer):
    """Returns an independent, built copy of `layer` with the same weights.

    Works for plain layers and for models of every kind (a subclassed model
    needs a working `get_config()`, as for `keras.models.clone_model`).

    Args:
        layer: A built layer or model.

    Returns:
        A new object of the same class.
    """
    if isinstance(layer, keras.Model):
        if is_graph_model(layer):
            return clone_and_replace(layer, lambda _: None)
        try:
            clone = keras.models.clone_model(layer)
        except NotImplementedError as error:
            raise ValueError(
                f"Cannot copy subclassed model '{layer.name}' "
                f"({type(layer).__name__}): it cannot be re-created from its "
                "config. Implement get_config() (returning the __init__ "
                "arguments) and, if needed, from_config()."
            ) from error
        build_config = layer.get_build_config()
        if build_config and not clone.built:
            clone.build_from_config(build_config)
        if not clone.built:
            raise ValueError(
                f"Cannot rebuild a copy of subclassed model '{layer.name}': "
                "it does not record its input shape. Build it with "
                "model.build(input_shape) or call it on data first."
            )
        call_symbolically(clone, build_config["input_shape"])
    elif not isinstance(layer, keras.layers.Layer):
        # A stateless operation in a Functional graph (`x + y` on symbolic
        # tensors is a `keras.ops` Add, not a layer): nothing to copy.
        return layer
    else:
        clone = layer.__class__.from_config(layer.get_config())
        build_config = layer.get_build_config()
        # Some layers build themselves from their config (KerasHub's
        # TransformerDecoder records its input shapes there).
        if build_config and not clone.built:
            clone.build_from_config(build_config)
    clone.set_weights(layer.get_weights())
    return clone


def inline_nested_models(model):
    """A flat copy of `model` with its nested graph models inlined.

    Each nested Sequential/Functional model is replaced by copies of its
    layers, called on the same tensors; nothing else changes. Techniques
    that follow tensors across layers (channel pruning) then see one graph.
    A copied layer keeps its name, prefixed with its nested model's name if
    another layer already has it (`"block_conv2d"`).

    Args:
        model: A built Sequential or Functional model.

    Returns:
        `model` itself if it has no nested graph model, else a new
        Functional model computing the same function; `model` is unchanged.
    """
    if not any(
        is_graph_model(layer) for layer in keras_private.child_layers(model)
    ):
        return model
    names = {
        layer.name
        for layer in keras_private.child_layers(model)
        if not is_graph_model(layer)
    }
    copies = {}

    def copied(layer, prefix):
        if id(layer) not in copies:
            clone = copy_layer(layer)
            if prefix is not None and isinstance(clone, keras.layers.Layer):
                if clone.name in names:
                    clone.name = f"{prefix}_{clone.name}"
                if clone.name in names:
                    raise ValueError(
                        f"Cannot inline '{prefix}': the model already has "
                        f"a layer named '{clone.name}'. Rename one of them."
                    )
                names.add(clone.name)
            copies[id(layer)] = clone
        return copies[id(layer)]

    def run(graph_model, inputs, prefix):
        def call(layer, *args, **kwargs):
            if is_graph_model(layer):
                # A nested model's call arguments (training, mask) reach
                # its layers through Keras's call context.
                return run(layer, args[0], layer.name)
            return copied(layer, prefix)(*args, **kwargs)

        graph = keras_private.functional_graph(graph_model)
        return keras_private.run_through_graph(graph, inputs, call)

    graph = keras_private.functional_graph(model)
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(
            batch_shape=t.shape, dtype=t.dtype, name=t.name.split(":")[0]
        ),
        keras_private.inputs_structure(graph),
    )
    outputs = run(model, inputs, None)  # the outer layers keep their names
    return keras.Model(inputs, outputs, name=model.name)


def symbolic_inputs(input_shape):
    """`keras.KerasTensor`s of `input_shape` (a shape or a nest of them)."""
    return keras.tree.map_shape_structure(
        lambda shape: keras.KerasTensor(shape), input_shape
    )


def built_input_shape(layer):
    """The shape of the first argument `layer` was built for, from its
    build config, or `None` where it records none.

    Layers built through Keras record `{"input_shape": ...}` (a shape, or a
    list or dict of shapes), or one shape per `build()` argument
    (`{"shapes_dict": {"query_shape": ...}}`).
    """
    config = layer.get_build_config() or {}
    if "input_shape" in config:
        return config["input_shape"]
    return next(iter(config.get("shapes_dict", {}).values()), None)


def call_symbolically(model, input_shape):
    """Calls a built `model` once on symbolic inputs of `input_shape`.

    A subclassed model built with `build()` (or `build_from_config`) has
    never been called, and Keras's exporters refuse such a model; a call on
    `keras.KerasTensor`s costs no computation and makes it exportable.
    """
    model(symbolic_inputs(input_shape))


@dataclasses.dataclass(frozen=True)
class GraphCalls:
    """The layer calls of a Functional graph and the uses of its tensors.

    Attributes:
        graph: The Functional model holding the graph (for a Sequential
            model, its internal Functional one).
        nodes: The layer-call nodes (`node.operation` is the layer), the
            model's inputs first, input placeholders left out.
        uses: `{id(layer): number of calls}`.
        consumers: `{id(tensor): [layer, ...]}`: the layers that take each
            tensor, with `None` for a model output.
    """

    graph: object
    nodes: tuple
    uses: dict
    consumers: dict

    def sole_consumer(self, tensor):
        """The one layer `tensor` feeds, or `None` (several, or an output)."""
        found = self.consumers.get(id(tensor), ())
        return found[0] if len(found) == 1 else None


def graph_calls(model):
    """Returns the `GraphCalls` of a Sequential or Functional model.

    Nested models appear as single calls; walk them with another
    `graph_calls`.

    Raises:
        ValueError: For a Sequential model built without a known input
            shape (it has no graph).
    """
    graph = keras_private.functional_graph(model)
    if graph is None:
        raise ValueError(
            f"Sequential model '{model.name}' has no graph (it was built "
            "without a known input shape). Give it a keras.Input as its "
            "first layer."
        )
    nodes = tuple(
        node
        for depth, depth_nodes in sorted(
            keras_private.nodes_by_depth(graph).items(), reverse=True
        )
        for node in depth_nodes
        if node.operation is not None and not node.is_input
    )
    uses = collections.Counter(id(node.operation) for node in nodes)
    consumers = collections.defaultdict(list)
    for node in nodes:
        for tensor in node.input_tensors:
            consumers[id(tensor)].append(node.operation)
    for tensor in graph.outputs:
        consumers[id(tensor)].append(None)  # a model output
    return GraphCalls(graph, nodes, dict(uses), dict(consumers))


def clone_and_replace(model, replace_fn):
    """Copies a Sequential/Functional model, letting `replace_fn` swap layers.

    Nested Sequential and Functional models are rewritten recursively;
    `replace_fn` sees their leaf layers and any nested subclassed model as a
    whole. Shared layers stay shared.

    Args:
        model: A built Sequential or Functional model.
        replace_fn: `replace_fn(layer)` returns the new layer to use in
            place of `layer` (it must carry the weights it needs), or `None`
            to keep an independent copy of `layer` with the same weights.

    Returns:
        A new model; `model` is unchanged.

    Example:

    ```python
    def no_dropout(layer):
        if isinstance(layer, keras.layers.Dropout):
            return keras.layers.Identity(name=layer.name)
        return None

    inference_model = clone_and_replace(model, no_dropout)
    ```
    """
    if not is_graph_model(model):
        raise ValueError(
            f"clone_and_replace() needs a Sequential or Functional model; "
            f"'{model.name}' is a subclassed {type(model).__name__}."
        )
    check_built(model)

    def clone_function(layer):
        replacement = replace_fn(layer)
        return replacement if replacement is not None else copy_layer(layer)

    call_function = None
    if not isinstance(model, keras.Sequential):
        call_function = _call_without_unknown_mask
    return keras.models.clone_model(
        model,
        clone_function=clone_function,
        call_function=call_function,
        recursive=True,
    )


def _call_without_unknown_mask(layer, *args, **kwargs):
    # A wrapper accepts `mask` (to pass it on), so Functional graphs record
    # `mask=...` in its node; the layer replacing it may not accept one.
    if (
        "mask" in kwargs
        and "mask" not in inspect.signature(layer.call).parameters
    ):
        kwargs.pop("mask")
    return layer(*args, **kwargs)
