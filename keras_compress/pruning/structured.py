"""Channel (structured) pruning that rebuilds a physically smaller model.

Unstructured sparsity makes a file smaller but not faster: the zeros are
still multiplied. Channel pruning removes whole Conv filters and Dense units
and rebuilds the model with smaller layers, so every kernel that reads them
shrinks too, and the converted file runs faster.

Three steps, each a function:

- `channel_plan(model, ratio, ...)` scores the output channels of every
  prunable group (see `keras_compress.pruning.channel_groups`) and decides
  which to keep. Nothing is changed.
- `apply_channel_plan(model, plan)` returns the smaller model: the
  surviving weights are copied, consumer layers lose the matching input
  channels, BatchNormalization and DepthwiseConv follow their producer, and
  layers tied by `Add`/`Multiply`/`Concatenate` lose the same channels.
- `mask_channels(model, plan)` returns a model with the original
  architecture that computes exactly what the smaller one computes.

`prune_channels(model, ratio, ...)` does the first two at once;
`GradualChannelPruning(plan, ...)` is a callback that fades the removed
channels out during training before the rebuild.

What "the same function" means: a removed channel's *value* is generally not
zero (a bias, BatchNorm beta or `activation(0)` can make it non-zero), so
zeroing a producer's filter does not remove its effect. What removal really
does is drop the channel's contribution to every layer that reads it. The
masked model therefore zeroes the *consumer* input weights (kernel rows) of
the removed channels; its outputs equal the rebuilt model's up to float
rounding.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np

from keras_compress import rewrite
from keras_compress.core import keras_private
from keras_compress.pruning import channel_groups

CRITERIA = ("l1", "l2", "bn_gamma", "activation")
SCOPES = ("layer", "global")


@dataclasses.dataclass
class ChannelPruningPlan:
    """Which output channels of each group a channel pruning keeps.

    Attributes:
        graph: The model's `ChannelGraph` (groups, producers, consumers).
        keep: `{group index: sorted int array of kept channels}` for every
            group that loses channels.
        skipped: `{group index: reason}` for groups with prunable layers
            that are left whole (blocked, or not selected).
        criterion: How channels were scored.
    """

    graph: channel_groups.ChannelGraph
    keep: dict
    skipped: dict
    criterion: str = "l1"

    def kept_channels(self, layer_name):
        """Kept output channels of a producer layer (`None`: all kept)."""
        group = self.graph.group_of(layer_name)
        if group is None:
            return None
        return self.keep.get(group.index)

    def as_dict(self):
        """The plan as plain Python data (e.g. for JSON)."""
        rows = []
        for group in self.graph.groups:
            if not group.producers:
                continue
            keep = self.keep.get(group.index)
            rows.append(
                {
                    "layers": list(group.producers),
                    "channels": group.size,
                    "kept": group.size if keep is None else len(keep),
                    "kept_channels": None if keep is None else keep.tolist(),
                    "skipped": self.skipped.get(group.index),
                }
            )
        return {"criterion": self.criterion, "groups": rows}

    def __str__(self):
        lines = [f"Channel pruning plan ({self.criterion}):"]
        lines.append(f"{'layers':<44} {'channels':>8} {'kept':>6}  note")
        for row in self.as_dict()["groups"]:
            layers = ", ".join(row["layers"])
            note = row["skipped"] or ""
            lines.append(
                f"{layers:<44} {row['channels']:>8} {row['kept']:>6}  {note}"
            )
        return "\n".join(lines)


def _check_ratio(value, what):
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not 0 <= value < 1
    ):
        raise ValueError(
            f"{what} must be a number in [0, 1) (the fraction of channels "
            f"to remove; 1 would remove every channel), got {value!r}."
        )


def _check_positive_int(value, name, why=""):
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be an integer >= 1, got {value!r}.{why}"
        )


def _selected_groups(model, graph, layers, ratio):
    """`{group index: ratio}` for the groups to prune."""
    if layers is None:
        return {g.index: ratio for g in graph.groups if g.prunable}
    if callable(layers):
        names = [
            name
            for g in graph.groups
            for name in g.producers
            if layers(model.get_layer(name))
        ]
        ratios = dict.fromkeys(names, ratio)
    else:
        if isinstance(layers, str):
            layers = [layers]
        if isinstance(layers, dict):
            ratios = dict(layers)
            for name, value in ratios.items():
                _check_ratio(value, f"The ratio for layer '{name}' in `layers`")
        else:
            ratios = dict.fromkeys(layers, ratio)
        known = {layer.name for layer in model.layers}
        for name in ratios:
            if name not in known:
                raise ValueError(
                    f"`layers` names '{name}', which is not a layer of "
                    f"'{model.name}'. Its layers are: {sorted(known)}."
                )
            layer = model.get_layer(name)
            group = graph.group_of(name)
            if group is None:
                raise ValueError(
                    f"Layer '{name}' ({type(layer).__name__}) cannot be "
                    "channel-pruned: only these layers' output channels "
                    f"can be removed: {channel_groups.SUPPORTED}."
                )
            if not group.prunable:
                raise ValueError(
                    f"Layer '{name}' ({type(layer).__name__}) cannot be "
                    f"channel-pruned because its output channels reach "
                    f"something the rebuilt model cannot follow: "
                    f"{group.blocked}. Supported: {channel_groups.SUPPORTED}."
                )
    selected = {}
    for name, value in ratios.items():
        group = graph.group_of(name)
        if group is None or not group.prunable:
            continue
        # Tied layers lose the same channels: the most careful ratio wins.
        selected[group.index] = min(value, selected.get(group.index, 1.0))
    return selected


def _kernel(layer):
    if isinstance(
        layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
    ):
        return keras.ops.convert_to_numpy(layer.pointwise_kernel)
    return keras.ops.convert_to_numpy(layer.kernel)


def _mean_activations(model, graph, names, data):
    """`{producer name: mean |output| per channel}` over `data`."""
    if not names:
        return {}
    # The graph's own tensors: `layer.output` is ambiguous for a layer that
    # was also called outside this model.
    inputs = (
        keras_private.functional_graph(model).inputs
        if isinstance(model, keras.Sequential)
        else model.inputs
    )
    probe = keras.Model(inputs, [graph.output_tensors[n] for n in names])
    outputs = probe.predict(data, verbose=0)
    if len(names) == 1:
        outputs = [outputs]
    return {
        name: np.mean(np.abs(output), axis=tuple(range(output.ndim - 1)))
        for name, output in zip(names, outputs)
    }


def _bn_gamma_score(model, group):
    norms = [
        model.get_layer(name)
        for name in group.followers
        if isinstance(model.get_layer(name), keras.layers.BatchNormalization)
    ]
    norms = [bn for bn in norms if bn.scale]
    if not norms:
        raise ValueError(
            f"criterion='bn_gamma' needs a BatchNormalization with "
            f"scale=True after layer(s) {group.producers}, and there is "
            "none. Use criterion='l1', 'l2' or 'activation', or leave these "
            "layers out with `layers=`."
        )
    return sum(np.abs(keras.ops.convert_to_numpy(bn.gamma)) for bn in norms)


def _norm_score(model, group, criterion):
    total = np.zeros(group.size)
    for name in group.producers:
        kernel = _kernel(model.get_layer(name)).reshape(-1, group.size)
        if criterion == "l1":
            total += np.sum(np.abs(kernel), axis=0)
        else:
            total += np.sqrt(np.sum(np.square(kernel), axis=0))
    return total


def _scores(model, graph, groups, criterion, data):
    """`{group index: per-channel importance}`, summed over tied layers."""
    if criterion == "activation":
        names = [n for i in groups for n in graph.groups[i].producers]
        activations = _mean_activations(model, graph, names, data)
        return {
            i: sum(activations[n] for n in graph.groups[i].producers)
            for i in groups
        }
    if criterion == "bn_gamma":
        return {i: _bn_gamma_score(model, graph.groups[i]) for i in groups}
    return {i: _norm_score(model, graph.groups[i], criterion) for i in groups}


def _kept_count(size, ratio, min_channels, round_to):
    keep = size - math.floor(ratio * size + 1e-9)
    keep = min(size, math.ceil(keep / round_to) * round_to)
    return max(keep, min(min_channels, size))


def _top(score, count):
    # Stable: ties keep the lower channel index.
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:count])


def channel_plan(
    model,
    ratio=0.5,
    *,
    criterion="l1",
    layers=None,
    scope="layer",
    data=None,
    min_channels=1,
    round_to=1,
):
    """Decides which output channels channel pruning removes.

    Output channels of Conv1D/Conv2D/SeparableConv1D/SeparableConv2D and
    units of Dense are scored; layers tied by a merge are scored and pruned
    together as one group. The model's output layer(s), groups that reach a
    model input, and groups that pass through a layer the surgery cannot
    follow (e.g. a `Lambda`) are left whole; `plan.skipped` says why.

    Args:
        model: A built Sequential or Functional model.
        ratio: Fraction of channels to remove, in `[0, 1)`.
        criterion: `"l1"` or `"l2"` (norm of each channel's kernel slice),
            `"bn_gamma"` (|gamma| of the BatchNormalization that follows)
            or `"activation"` (mean |output| on `data`).
        layers: Which layers to prune: `None` (all that can be), a list of
            names, a callable `layer -> bool`, or a dict `{name: ratio}`
            for per-layer ratios. Tied layers are pruned as a group when
            any of them is selected (with the smallest of their ratios).
        scope: `"layer"`: remove `ratio` of each group's channels.
            `"global"`: remove `ratio` of all selected channels, the lowest
            scores first, each group's scores divided by their mean so that
            groups compare.
        data: Inputs for `criterion="activation"` (array or dataset).
        min_channels: Fewest channels a group keeps.
        round_to: Kept counts are rounded up to a multiple of this (e.g. 8
            for fast kernels), at most the original count.

    Returns:
        A `ChannelPruningPlan`.

    Raises:
        ValueError: For a ratio outside `[0, 1)`, an unknown criterion or
            scope, a layer name that does not exist or cannot be pruned,
            or a subclassed model.

    Example:

    ```python
    plan = channel_plan(model, 0.5, criterion="l2")
    print(plan)
    small = apply_channel_plan(model, plan)
    ```
    """
    _check_ratio(ratio, "`ratio`")
    if criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {CRITERIA}, got {criterion!r}."
        )
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}, got {scope!r}.")
    if criterion == "activation" and data is None:
        raise ValueError(
            "criterion='activation' scores channels by their mean |output| "
            "on some inputs: pass them as `data=` (e.g. 256 training images)."
        )
    if scope == "global" and isinstance(layers, dict):
        raise ValueError(
            "scope='global' removes `ratio` of all channels at once; "
            "per-layer ratios (`layers` as a dict) need scope='layer'."
        )
    _check_positive_int(
        min_channels,
        "min_channels",
        " A layer must keep at least one channel: removing every channel "
        "would cut the model in two.",
    )
    _check_positive_int(round_to, "round_to")
    model = _flat(model)
    graph = channel_groups.analyze_channels(model)
    selected = _selected_groups(model, graph, layers, ratio)
    skipped = {}
    for group in graph.groups:
        if not group.producers:
            continue
        if group.blocked is not None:
            skipped[group.index] = f"left whole: {group.blocked}"
        elif group.index not in selected:
            skipped[group.index] = "not selected by `layers`"
    scores = _scores(model, graph, selected, criterion, data)
    keep = {}
    if scope == "layer":
        for index, group_ratio in selected.items():
            size = graph.groups[index].size
            count = _kept_count(size, group_ratio, min_channels, round_to)
            if count < size:
                keep[index] = _top(scores[index], count)
    else:
        keep = _global_keep(graph, scores, ratio, min_channels, round_to)
    return ChannelPruningPlan(graph, keep, skipped, criterion)


def _global_keep(graph, scores, ratio, min_channels, round_to):
    entries = []
    for index, score in scores.items():
        mean = float(np.mean(score))
        normalized = score / mean if mean > 0 else np.ones_like(score)
        entries += [(value, index, c) for c, value in enumerate(normalized)]
    entries.sort()
    to_remove = math.floor(ratio * len(entries) + 1e-9)
    remaining = {index: graph.groups[index].size for index in scores}
    removed = {index: set() for index in scores}
    for _, index, channel in entries:
        if to_remove == 0:
            break
        if remaining[index] > min_channels:
            removed[index].add(channel)
            remaining[index] -= 1
            to_remove -= 1
    keep = {}
    for index, gone in removed.items():
        size = graph.groups[index].size
        count = min(size, math.ceil((size - len(gone)) / round_to) * round_to)
        if count < size:
            keep[index] = _top(scores[index], count)
    return keep


def prune_channels(
    model,
    ratio=0.5,
    *,
    criterion="l1",
    layers=None,
    scope="layer",
    data=None,
    min_channels=1,
    round_to=1,
):
    """Removes the least important channels and returns a smaller model.

    Shorthand for `apply_channel_plan(model, channel_plan(model, ...))`;
    see `channel_plan` for the arguments. The new model has fewer Conv
    filters / Dense units and correspondingly smaller consumer kernels,
    with the surviving weights copied. It usually needs a short
    fine-tuning to recover accuracy. `model` is not changed.

    Returns:
        A new Sequential/Functional `keras.Model` made of plain Keras
        layers (it saves and converts like any other). Nested Sequential
        and Functional models are inlined (their channels are pruned too):
        the new model is flat, its layers keep their names.

    Raises:
        ValueError: If no channel can be removed at all (every Dense or
            convolution output is a model output or feeds a layer whose
            channels cannot be followed, such as an LSTM).

    Example:

    ```python
    small = keras_compress.pruning.prune_channels(model, 0.5)
    small.compile(...)
    small.fit(x_train, y_train, epochs=2)
    print(keras_compress.analysis.compare_profiles(
        keras_compress.analysis.profile(model),
        keras_compress.analysis.profile(small)))
    ```
    """
    plan = channel_plan(
        model,
        ratio,
        criterion=criterion,
        layers=layers,
        scope=scope,
        data=data,
        min_channels=min_channels,
        round_to=round_to,
    )
    if not plan.keep and not any(
        group.producers and group.blocked is None for group in plan.graph.groups
    ):
        raise ValueError(
            f"prune_channels() found no channel it can remove in "
            f"'{model.name}': every Dense/convolution output is left "
            "whole (a model output, or read by a layer whose channels it "
            "cannot follow, e.g. LSTM, MultiHeadAttention, Embedding). "
            "Prune such models with "
            "keras_compress.pruning.prune_low_magnitude instead.\n"
            f"{plan}"
        )
    return apply_channel_plan(model, plan)


def _flat(model):
    """`model` with nested Sequential/Functional models inlined, so that
    their channels are pruned with the rest of the graph (the smaller
    model is flat; its layers keep their names)."""
    if rewrite.is_graph_model(model):
        return rewrite.inline_nested_models(model)
    return model


def _matching_graph(model, plan):
    """`(model, graph)`: `model` flattened like the plan's (nested models
    inlined) and its ChannelGraph, checked to match the plan's groups."""
    if not isinstance(plan, ChannelPruningPlan):
        raise TypeError(
            f"`plan` must be a ChannelPruningPlan (from channel_plan()), "
            f"got {type(plan).__name__}."
        )
    if model is plan.graph.model:
        return model, plan.graph
    model = _flat(model)
    graph = channel_groups.analyze_channels(model)
    mine = [(g.producers, g.size) for g in graph.groups]
    theirs = [(g.producers, g.size) for g in plan.graph.groups]
    if mine != theirs:
        raise ValueError(
            f"The plan was made for model '{plan.graph.model.name}', whose "
            f"layers and channels differ from those of '{model.name}'. Make "
            "a plan for this model with channel_plan()."
        )
    return model, graph


def _changes(graph, plan):
    """`{layer name: (input keep or None, output keep or None)}`."""
    changes = {}
    for name in graph.input_shapes:
        in_keep = graph.input_keep(name, plan.keep)
        group = graph.group_of(name)
        out_keep = plan.keep.get(group.index) if group is not None else None
        if in_keep is not None or out_keep is not None:
            changes[name] = (in_keep, out_keep)
    return changes


def _sliced(name, value, in_keep, out_keep, is_producer):
    if name in ("kernel", "pointwise_kernel"):
        if in_keep is not None:
            value = np.take(value, in_keep, axis=-2)
        if out_keep is not None:
            value = np.take(value, out_keep, axis=-1)
        return value
    if name == "depthwise_kernel":
        return value if in_keep is None else np.take(value, in_keep, axis=-2)
    if name == "bias" and is_producer:
        return value if out_keep is None else value[out_keep]
    # Per-channel weights of a follower (DepthwiseConv bias, BatchNorm).
    return value if in_keep is None else value[in_keep]


def _resized_layer(layer, input_shape, in_keep, out_keep):
    config = layer.get_config()
    is_producer = channel_groups.is_supported_producer(layer)
    if out_keep is not None:
        key = "units" if isinstance(layer, keras.layers.Dense) else "filters"
        config[key] = len(out_keep)
    target = config.get("target_shape")
    if isinstance(layer, keras.layers.Reshape) and target[-1] != -1:
        config["target_shape"] = (*target[:-1], len(in_keep))
    new = type(layer).from_config(config)
    shape = list(input_shape)
    if in_keep is not None:
        shape[-1] = len(in_keep)
    new.build(tuple(shape))
    values = [
        _sliced(
            w.name,
            keras.ops.convert_to_numpy(w),
            in_keep,
            out_keep,
            is_producer,
        )
        for w in layer.weights
    ]
    new.set_weights(values)
    return new


def apply_channel_plan(model, plan):
    """Rebuilds `model` without the channels `plan` removes.

    Args:
        model: The model the plan was made for, or one with the same
            architecture (e.g. the masked copy after fine-tuning).
        plan: A `ChannelPruningPlan` from `channel_plan`.

    Returns:
        A new, smaller model; `model` is unchanged.

    Example:

    ```python
    plan = channel_plan(model, 0.5)
    small = apply_channel_plan(model, plan)
    ```
    """
    model, graph = _matching_graph(model, plan)
    changes = _changes(graph, plan)
    by_id = {id(model.get_layer(name)): name for name in changes}

    def replace(layer):
        name = by_id.get(id(layer))
        if name is None:
            return None
        in_keep, out_keep = changes[name]
        return _resized_layer(
            layer, graph.input_shapes[name], in_keep, out_keep
        )

    return rewrite.clone_and_replace(model, replace)


def mask_channels(model, plan):
    """Returns a same-architecture model that computes like the pruned one.

    The removed channels are cut off where they are read: the kernel rows
    of every consumer layer for those channels are set to zero. (Zeroing
    the producer's filters would not do: bias, BatchNorm beta and
    activation(0) keep a removed channel's value non-zero.) The result's
    outputs equal `apply_channel_plan(model, plan)`'s up to float rounding.

    Args:
        model: The model the plan was made for.
        plan: A `ChannelPruningPlan`.

    Returns:
        A new model with the same layers as `model` (nested Sequential and
        Functional models inlined, as in `apply_channel_plan`).
    """
    model, graph = _matching_graph(model, plan)
    masked = rewrite.clone_and_replace(model, lambda _: None)
    for kernel, removed in _consumer_rows(masked, graph, plan):
        value = keras.ops.convert_to_numpy(kernel).copy()
        value[..., removed, :] = 0
        kernel.assign(value)
    return masked


def _consumer_rows(model, graph, plan):
    """`[(kernel variable, removed input rows)]` of every consumer layer."""
    rows = []
    for name, (in_keep, _) in _changes(graph, plan).items():
        layer = model.get_layer(name)
        if in_keep is None or not channel_groups.is_supported_producer(layer):
            continue
        kernel = (
            layer.pointwise_kernel
            if hasattr(layer, "pointwise_kernel")
            else layer.kernel
        )
        removed = np.setdiff1d(np.arange(kernel.shape[-2]), in_keep)
        rows.append((kernel, removed))
    return rows


class GradualChannelPruning(keras.callbacks.Callback):
    """Fades the channels a plan removes out of the model during training.

    The consumer kernel rows of the removed channels (what
    `mask_channels` zeroes) are scaled by a factor that goes linearly from
    1 at `begin_step` to 0 at `end_step`, and kept at zero afterwards, so
    the rest of the network learns to do without them. At the end the
    model computes exactly what `apply_channel_plan(model, plan)` does, so
    the rebuild loses nothing.

    The callback also works when the planned model is trained inside
    another, e.g. as the student of a `kc.distillation.Distiller`: it
    finds the model the plan was made for among the fitted model's layers.

    Args:
        plan: A `ChannelPruningPlan` for the model being trained (or one of
            the same architecture).
        begin_step: Optimizer step at which fading starts.
        end_step: Step from which the channels are fully cut off.
        frequency: Update every this many steps (and at `end_step`).

    Example:

    ```python
    plan = kc.pruning.channel_plan(model, 0.5)
    model.fit(x, y, epochs=3, callbacks=[
        kc.pruning.GradualChannelPruning(plan, begin_step=0, end_step=1000)])
    small = kc.pruning.apply_channel_plan(model, plan)
    ```
    """

    def __init__(self, plan, begin_step=0, end_step=1000, frequency=1):
        super().__init__()
        if not isinstance(plan, ChannelPruningPlan):
            raise TypeError(
                "`plan` must be a ChannelPruningPlan (from channel_plan()), "
                f"got {type(plan).__name__}."
            )
        for name, value in (("begin_step", begin_step), ("end_step", end_step)):
            if not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(
                    f"`{name}` must be an integer >= 0, got {value!r}."
                )
        if end_step <= begin_step:
            raise ValueError(
                f"`end_step` ({end_step}) must be greater than `begin_step` "
                f"({begin_step}): the channels fade out between the two."
            )
        _check_positive_int(frequency, "frequency")
        self.plan = plan
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)
        self._rows = None
        self._factor = 1.0

    def factor_at(self, step):
        """The scale of the removed channels' rows after `step` steps."""
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return float(min(1.0, max(0.0, 1.0 - progress)))

    def _pruned_model(self):
        """The model whose channels fade: the fitted one, or the one inside
        it that the plan was made for (e.g. a `Distiller`'s student)."""
        model = self.model
        if model is self.plan.graph.model:
            return model
        for _, layer in rewrite.iter_layers(model, include_models=True):
            if layer is self.plan.graph.model:
                return layer
        if rewrite.is_graph_model(model):
            # A plan made for another model of the same architecture;
            # `_matching_graph` checks that it fits.
            return model
        raise ValueError(
            f"GradualChannelPruning: the plan was made for model "
            f"'{self.plan.graph.model.name}', which '{model.name}' (a "
            f"subclassed {type(model).__name__}) does not contain. Make "
            "the plan from the Functional or Sequential model being "
            "trained inside it, e.g. channel_plan(distiller.student, ...)."
        )

    def on_train_begin(self, logs=None):
        model = self._pruned_model()
        nested = [
            layer.name
            for layer in keras_private.child_layers(model)
            if rewrite.is_graph_model(layer)
        ]
        if nested:
            raise ValueError(
                f"GradualChannelPruning: model '{model.name}' nests the "
                f"model(s) {nested}, and the fading channels are followed "
                "through one flat graph. Train the flat copy that "
                "channel pruning uses, "
                "`keras_compress.rewrite.inline_nested_models(model)`, or "
                "use prune_channels() (which inlines for you)."
            )
        model, graph = _matching_graph(model, self.plan)
        self._rows = _consumer_rows(model, graph, self.plan)

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        due = step % self.frequency == 0 or step >= self.end_step
        if step < self.begin_step or not due:
            return
        factor = self.factor_at(step)
        # Rows were scaled to `self._factor` last time; rescale what the
        # optimizer made of them to the new factor (0 cuts them off).
        scale = factor / self._factor if self._factor > 0 else 0.0
        if scale == 1.0:
            return
        for kernel, removed in self._rows:
            value = keras.ops.convert_to_numpy(kernel).copy()
            value[..., removed, :] *= scale
            kernel.assign(value)
        self._factor = factor
