"""Copies of a model under a dtype policy, with float32 islands.

Setting the global policy only affects layers created afterwards, and an
already trained model cannot change policy in place without touching the
user's layers. `apply_policy` returns a new model whose layers are re-created
under the chosen policy (their float32 variables are copied, so nothing is
retrained), keeping the numerically sensitive layers in float32.

Which layers stay float32 by default, and why:

- the layers that produce the model's outputs (the logits): the loss and
  the metrics then see float32 values, and a float16 softmax/log-softmax of
  large logits overflows. This is also what the Keras mixed-precision guide
  recommends;
- softmax layers and layers with a softmax activation anywhere (attention
  scores are handled inside Keras's attention layers).

Normalization layers are left under the mixed policy on purpose: in Keras 3,
`BatchNormalization`, `LayerNormalization` and `GroupNormalization` already
compute their statistics in float32 when the compute dtype is float16 or
bfloat16 (they upcast internally), so forcing them to float32 would only add
casts.
"""

import keras

from keras_compress import rewrite
from keras_compress.core import keras_private
from keras_compress.mixed_precision import policy as policy_lib

# Policies whose layers we may switch: float variables and float compute.
# Others (e.g. Keras's int8 quantized policies, float64) are copied as is.
_SWITCHABLE = ("float32", "mixed_float16", "mixed_bfloat16")
_SOFTMAX_ACTIVATIONS = (
    keras.activations.softmax,
    keras.activations.log_softmax,
)


def _inner(layer):
    """The innermost layer of a (possibly nested) wrapper."""
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _names(layer):
    """The names a layer can be selected by (its own and its wrapped one)."""
    names = {layer.name}
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
        names.add(layer.name)
    return names


def _is_softmax(layer):
    layer = _inner(layer)
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(layer, "activation", None) in _SOFTMAX_ACTIVATIONS


def _output_layers(model):
    """Layers whose outputs are the outputs of a Sequential/Functional model.

    Nested graph models are followed to their own output layers; a nested
    subclassed model at the output cannot be looked into and is skipped.
    """
    if isinstance(model, keras.Sequential):
        candidates = [model.layers[-1]] if model.layers else []
    elif rewrite.is_graph_model(model):
        # `_keras_history` is how Keras's own Functional code finds the
        # layer that produced a symbolic tensor.
        candidates = [
            keras_private.producer(tensor) for tensor in model.outputs
        ]
    else:
        return []
    layers = []
    for layer in candidates:
        if rewrite.is_graph_model(layer):
            layers.extend(_output_layers(layer))
        elif not isinstance(layer, keras.Model):
            layers.append(layer)
    return layers


def _units(model):
    """The layers a policy is applied to, nested models looked into.

    Wrappers and composite layers (MultiHeadAttention, RNN) count whole.
    """
    units = []
    seen = set()

    def walk(layer):
        for child in keras_private.child_layers(layer):
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            if isinstance(child, keras.Model):
                walk(child)
            else:
                units.append(child)

    walk(model)
    return units


def default_float32_layers(model):
    """Names of the layers `apply_policy` keeps in float32 by default.

    Args:
        model: A built `keras.Model`.

    Returns:
        A sorted list of layer names: the output layers (for Sequential and
        Functional models) and every softmax layer.
    """
    names = {layer.name for layer in _output_layers(model)}
    names.update(layer.name for layer in _units(model) if _is_softmax(layer))
    return sorted(names)


def _selector(model, float32_layers):
    """Turns `float32_layers` into `select(layer) -> bool` and checks names."""
    if float32_layers is None:
        return lambda layer: False
    if float32_layers == "auto":
        names = set(default_float32_layers(model))
        return lambda layer: bool(_names(layer) & names)
    if callable(float32_layers):
        return lambda layer: bool(float32_layers(layer))
    if isinstance(float32_layers, str):
        float32_layers = [float32_layers]
    names = set(float32_layers)
    _check_names(model, names, "float32_layers")
    return lambda layer: bool(_names(layer) & names)


def _check_names(model, names, argument):
    known = set()
    for layer in _units(model):
        known |= _names(layer)
    missing = sorted(set(names) - known)
    if missing:
        raise ValueError(
            f"`{argument}` names {missing}, which are not layers of model "
            f"'{model.name}'. Its layers: {sorted(known)}."
        )


def _switchable(layer):
    policy = layer.dtype_policy
    return policy.quantization_mode is None and policy.name in _SWITCHABLE


def _recreate(layer, policy):
    """A copy of `layer` (weights included) computing under `policy`."""
    config = layer.get_config()
    inner = config
    while True:
        if "dtype" in inner:
            inner["dtype"] = policy
        nested = inner.get("layer")
        if not (isinstance(nested, dict) and "config" in nested):
            break
        inner = nested["config"]
    clone = type(layer).from_config(config)
    # Layers whose config has no `dtype` entry get the policy directly.
    target = clone
    while True:
        if target.dtype_policy.name != policy:
            target.dtype_policy = policy
        if not isinstance(target, keras.layers.Wrapper):
            break
        target = target.layer
    build_config = layer.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
    clone.set_weights(layer.get_weights())
    return clone


def _recreate_subclassed(model, policy_for):
    """A copy of a subclassed model with per-layer policies and weights."""
    config = model.get_config()
    if "dtype" in config:
        config["dtype"] = policy_for(model)
    try:
        clone = type(model).from_config(config)
    except NotImplementedError as error:
        raise ValueError(
            f"Cannot re-create subclassed model '{model.name}' "
            f"({type(model).__name__}) under a new policy: it cannot be "
            "re-created from its config. Implement get_config()."
        ) from error
    # Set the policies before the build, so that variables and sub-layers
    # created in `build()` follow them.
    originals = rewrite.leaf_layers(model)
    position = 0
    for copied in rewrite.leaf_layers(clone):
        # Sub-layers that composite layers create in `build()` exist in the
        # original only: pair each copy with the next original of its type.
        while position < len(originals) and type(originals[position]) is not (
            type(copied)
        ):
            position += 1
        if position == len(originals):
            break
        original = originals[position]
        position += 1
        if _switchable(original):
            copied.dtype_policy = policy_for(original)
    build_config = model.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
        # As in Keras's own deserialization: a model built by running it on
        # symbolic inputs does not always set the flag itself.
        clone.built = True
    if len(clone.weights) != len(model.weights):
        raise ValueError(
            f"Cannot rebuild a copy of subclassed model '{model.name}': the "
            f"copy has {len(clone.weights)} weights after building, the "
            f"model {len(model.weights)}. Make sure the model records its "
            "input shape (call model.build(input_shape)) and that "
            "get_config() returns every __init__ argument."
        )
    clone.set_weights(model.get_weights())
    return clone


def apply_policy(
    model, policy="auto", float32_layers="auto", layer_policies=None
):
    """Returns a copy of `model` that computes under a dtype policy.

    The copy holds the same (float32) weights; layers that must stay
    precise keep the `"float32"` policy. The input model is unchanged. The
    copy itself is created under `policy`, so `compile()` wraps its
    optimizer in a `LossScaleOptimizer` for `"mixed_float16"`.

    Works for Sequential and Functional models (nested ones included) and
    for subclassed models that implement `get_config()`. For a subclassed
    model the output layers are unknown, so `"auto"` only keeps softmax
    layers in float32: name the output layer in `float32_layers`.

    Args:
        model: A built `keras.Model`.
        policy: `"auto"`, `"float32"`, `"mixed_float16"` or
            `"mixed_bfloat16"` (see `resolve_policy`).
        float32_layers: Layers kept in float32: `"auto"` (the output layers
            and softmax layers, see `default_float32_layers`), `None` (none),
            a list of layer names, or a callable `f(layer) -> bool`.
        layer_policies: Optional dict `{layer_name: policy}` that sets the
            policy of individual layers, over the two arguments above.

    Returns:
        A new `keras.Model`.

    Example:

    ```python
    mixed = kc.mixed_precision.apply_policy(model, "mixed_bfloat16")
    mixed.compile(...)
    mixed.fit(x, y)
    blob = kc.convert.to_tflite(kc.mixed_precision.to_float32(mixed))
    ```
    """
    name = policy_lib.resolve_policy(policy)
    if not isinstance(model, keras.Model):
        raise ValueError(
            "apply_policy() takes a keras.Model; received "
            f"{type(model).__name__}."
        )
    rewrite.check_built(model)
    overrides = {}
    for layer_name, layer_policy in (layer_policies or {}).items():
        overrides[layer_name] = policy_lib.resolve_policy(
            policy_lib.check_policy(
                layer_policy, f"layer_policies[{layer_name!r}]"
            )
        )
    if overrides:
        _check_names(model, overrides, "layer_policies")
    keep_float32 = _selector(model, float32_layers)

    def policy_for(layer):
        for layer_name in _names(layer):
            if layer_name in overrides:
                return overrides[layer_name]
        return "float32" if keep_float32(layer) else name

    def replace(layer):
        if isinstance(layer, keras.Model):  # nested subclassed model
            return _recreate_subclassed(layer, policy_for)
        if not _switchable(layer):
            return None
        return _recreate(layer, policy_for(layer))

    with policy_lib.policy_scope(name):
        if rewrite.is_graph_model(model):
            return rewrite.clone_and_replace(model, replace)
        return _recreate_subclassed(model, policy_for)


def to_float32(model):
    """Returns a float32 copy of a mixed-precision model (for conversion).

    LiteRT has no bfloat16 kernels, so a `mixed_bfloat16` model does not
    convert as is; this copy computes everything in float32 with the same
    weights. Convert it with `kc.convert.to_tflite(copy, "float32")`, or
    `"float16"` for a file with float16 weights.

    Args:
        model: A built `keras.Model`.

    Returns:
        A new `keras.Model`.
    """
    return apply_policy(model, "float32", float32_layers=None)


def get_layer_policies(model):
    """The dtype policy name of every layer of `model`, by path.

    Args:
        model: A `keras.Model`.

    Returns:
        A dict `{path: policy_name}`; paths join nested names with "/".
    """
    return {
        path: layer.dtype_policy.name
        for path, layer in rewrite.iter_layers(model, include_models=True)
    }
