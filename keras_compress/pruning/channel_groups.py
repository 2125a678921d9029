"""Which output channels of a model must be removed together.

Channel pruning removes output channels (Conv filters, Dense units) and, with
them, the matching input channels of every layer that reads them. Layers tied
by an element-wise merge (`Add`, `Multiply`, ...) must lose the *same*
channels, and channels travel through layers that do not mix them
(BatchNormalization, activations, pooling, DepthwiseConv2D, Flatten, ...).

`analyze_channels(model)` walks a Sequential or Functional graph and builds
"channel spaces": each prunable layer's output opens one, pass-through layers
carry it on, merges unite spaces (union-find), `Concatenate` lays spaces side
by side and `Flatten` repeats them once per spatial position. The result is a
list of `ChannelGroup`s: the unit of pruning. A group that reaches a model
input or output, or a layer the surgery cannot follow, is *blocked* and
records why.
"""

import dataclasses

import keras
import numpy as np

from keras_compress import rewrite

L = keras.layers

# Layers whose output channels can be removed (their kernel's last axis).
PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.SeparableConv1D, L.SeparableConv2D)
# Layers with per-channel weights whose channels follow their input.
FOLLOWERS = (L.BatchNormalization, L.DepthwiseConv1D, L.DepthwiseConv2D)
# Layers that keep the last axis as it is and hold no per-channel weights.
PASS_THROUGH = (
    L.Activation,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.Identity,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.Cropping1D,
    L.Cropping2D,
    L.UpSampling1D,
    L.UpSampling2D,
)
# Element-wise merges: their inputs must lose the same channels.
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)

SUPPORTED = (
    "prunable: Dense, Conv1D, Conv2D, SeparableConv1D/2D (channels_last, "
    "groups=1, depth_multiplier=1); followed through: BatchNormalization, "
    "DepthwiseConv1D/2D (depth_multiplier=1), activations, Dropout, pooling, "
    "global pooling, ZeroPadding, Cropping, UpSampling, Flatten, Reshape "
    "keeping the last axis, Add/Subtract/Multiply/Average/Maximum/Minimum, "
    "Concatenate"
)


@dataclasses.dataclass
class ChannelGroup:
    """Output channels that are pruned together.

    Attributes:
        index: Position in `ChannelGraph.groups`.
        size: Number of channels.
        producers: Names of the layers whose output channels these are
            (several when tied by a merge such as `Add`).
        followers: Names of BatchNormalization/DepthwiseConv layers whose
            per-channel weights follow these channels.
        consumers: Names of the layers whose kernels read these channels.
        blocked: `None` if the group can be pruned, else why it cannot.
    """

    index: int
    size: int
    producers: list
    followers: list
    consumers: list
    blocked: str = None

    @property
    def prunable(self):
        return self.blocked is None and bool(self.producers)


@dataclasses.dataclass(frozen=True)
class _Channels:
    # The last axis of a tensor: spaces side by side (`(space, size)`),
    # repeated `repeat` times (Flatten of HxWxC gives repeat=H*W).
    segments: tuple
    repeat: int = 1

    @property
    def width(self):
        return sum(size for _, size in self.segments)


class ChannelGraph:
    """The channel groups of a model and how each layer sees them.

    Built by `analyze_channels`; read by `keras_compress.pruning.structured`.

    Attributes:
        model: The analyzed model.
        groups: `ChannelGroup`s, in the order their spaces were opened.
        input_shapes: `{layer name: input shape}` of the layers whose
            weights (or, for Reshape, target shape) channel pruning changes.
        output_tensors: `{producer name: its output in the model's graph}`.
    """

    def __init__(self, model):
        self.model = model
        self._parent = {}
        self._size = {}
        self._blocked = {}
        self._producers = {}
        self._followers = {}
        self._inputs = {}  # layer name -> _Channels of its (first) input
        self.input_shapes = {}  # producer/follower name -> its input shape
        self.output_tensors = {}  # producer name -> its symbolic output
        self._outputs = {}  # producer name -> its space
        self._consumers = []  # (layer name, _Channels)
        self.groups = []
        self._group_of_root = {}

    # -- union-find over channel spaces ------------------------------------
    def _new_space(self, size, producer=None, blocked=None):
        space = len(self._parent)
        self._parent[space] = space
        self._size[space] = size
        self._producers[space] = [producer] if producer else []
        self._followers[space] = []
        self._blocked[space] = blocked
        return space

    def _find(self, space):
        while self._parent[space] != space:
            self._parent[space] = self._parent[self._parent[space]]
            space = self._parent[space]
        return space

    def _union(self, a, b):
        a, b = self._find(a), self._find(b)
        if a == b:
            return
        if b < a:
            a, b = b, a
        self._parent[b] = a
        self._producers[a] += self._producers.pop(b)
        self._followers[a] += self._followers.pop(b)
        reason = self._blocked.pop(b)
        if self._blocked[a] is None:
            self._blocked[a] = reason

    def _block(self, channels, reason):
        for space, _ in channels.segments:
            root = self._find(space)
            if self._blocked[root] is None:
                self._blocked[root] = reason

    def _fresh(self, tensor, reason):
        width = _width(tensor)
        return _Channels(((self._new_space(width, blocked=reason), width),))

    # -- what the surgery asks ---------------------------------------------
    def group_of(self, layer_name):
        """The `ChannelGroup` of a producer layer's output, or `None`."""
        space = self._outputs.get(layer_name)
        if space is None:
            return None
        return self._group_of_root[self._find(space)]

    def input_keep(self, layer_name, keep_by_group):
        """Indices of the input features a layer keeps, or `None` for all.

        Args:
            layer_name: A producer or follower layer.
            keep_by_group: `{group index: sorted kept channel indices}`.

        Returns:
            A 1-D int array over the layer's input last axis, or `None` if
            no input channel of the layer is removed.
        """
        channels = self._inputs.get(layer_name)
        if channels is None:
            return None
        pieces, offset, changed = [], 0, False
        for space, size in channels.segments:
            group = self._group_of_root[self._find(space)]
            keep = keep_by_group.get(group.index)
            if keep is None:
                keep = np.arange(size)
            else:
                changed = True
            pieces.append(offset + np.asarray(keep))
            offset += size
        if not changed:
            return None
        keep = np.concatenate(pieces)
        # Flatten of (..., C) puts channel c of position p at p * C + c.
        return np.concatenate(
            [p * offset + keep for p in range(channels.repeat)]
        )

    # -- building ----------------------------------------------------------
    def _finish(self):
        roots = sorted({self._find(s) for s in self._parent})
        for root in roots:
            group = ChannelGroup(
                index=len(self.groups),
                size=self._size[root],
                producers=list(self._producers[root]),
                followers=list(self._followers[root]),
                consumers=[],
                blocked=self._blocked[root],
            )
            self.groups.append(group)
            self._group_of_root[root] = group
        for name, channels in self._consumers:
            for space, _ in channels.segments:
                group = self._group_of_root[self._find(space)]
                if name not in group.consumers:
                    group.consumers.append(name)


def _width(tensor):
    shape = tensor.shape
    return int(shape[-1]) if len(shape) and shape[-1] is not None else 0


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def is_supported_producer(layer):
    """True if channel pruning can remove `layer`'s output channels."""
    if not isinstance(layer, PRODUCERS) or not _channels_last(layer):
        return False
    if getattr(layer, "groups", 1) != 1:
        return False
    if getattr(layer, "depth_multiplier", 1) != 1:
        return False
    if getattr(layer, "quantization_mode", None):
        return False
    return True


def _mixes_channels(activation):
    # Softmax-like activations normalize over the channel axis, so removing
    # one channel changes the others; every other built-in is element-wise.
    name = getattr(activation, "__name__", "")
    return name in ("softmax", "log_softmax")


def _is_supported_follower(layer, rank):
    if isinstance(layer, L.BatchNormalization):
        return layer.axis in (-1, rank - 1)
    return (
        isinstance(layer, FOLLOWERS)
        and layer.depth_multiplier == 1
        and _channels_last(layer)
    )


def analyze_channels(model):
    """Finds the channel groups of a Sequential or Functional model.

    Args:
        model: A built Sequential or Functional model.

    Returns:
        A `ChannelGraph`.

    Raises:
        ValueError: If `model` is subclassed or not built.

    Example:

    ```python
    graph = analyze_channels(model)
    for group in graph.groups:
        print(group.producers, group.size, group.blocked)
    ```
    """
    if not rewrite.is_graph_model(model):
        raise ValueError(
            f"Channel pruning rebuilds the model from its graph, but "
            f"'{model.name}' is a subclassed {type(model).__name__} with no "
            "graph to follow. Build it as a Functional or Sequential model "
            "(keras.Model(inputs, outputs)), or prune it with "
            "keras_compress.pruning.prune_low_magnitude."
        )
    rewrite.check_built(model)
    graph_calls = rewrite.graph_calls(model)
    graph_model, nodes = graph_calls.graph, graph_calls.nodes
    graph = ChannelGraph(model)
    channels_of = {}
    for tensor in graph_model.inputs:
        channels_of[id(tensor)] = graph._fresh(tensor, "it is a model input")
    for node in nodes:
        layer = node.operation
        inputs = [channels_of[id(t)] for t in node.input_tensors]
        outputs = _propagate(
            graph, layer, node, inputs, graph_calls.uses[id(layer)]
        )
        for tensor, channels in zip(node.output_tensors, outputs):
            channels_of[id(tensor)] = channels
    for tensor in graph_model.outputs:
        graph._block(channels_of[id(tensor)], "it is a model output")
    graph._finish()
    return graph


def _propagate(graph, layer, node, inputs, num_calls):
    """Records `layer`'s role and returns its outputs' channels."""
    name = layer.name
    out = node.output_tensors
    if num_calls > 1 and layer.weights:
        return _other(graph, layer, inputs, out, "it is called more than once")
    first = inputs[0] if inputs else None
    rank = len(node.input_tensors[0].shape) if inputs else 0
    if is_supported_producer(layer) and len(inputs) == 1:
        graph._inputs[name] = first
        graph.input_shapes[name] = tuple(node.input_tensors[0].shape)
        graph._consumers.append((name, first))
        blocked = None
        if _mixes_channels(getattr(layer, "activation", None)):
            blocked = (
                f"its activation ({layer.activation.__name__}) mixes the "
                f"channels of layer '{name}'"
            )
        space = graph._new_space(_width(out[0]), producer=name, blocked=blocked)
        graph._outputs[name] = space
        graph.output_tensors[name] = out[0]
        return [_Channels(((space, _width(out[0])),))]
    if isinstance(layer, FOLLOWERS) and len(inputs) == 1:
        if first.repeat == 1 and _is_supported_follower(layer, rank):
            graph._inputs[name] = first
            graph.input_shapes[name] = tuple(node.input_tensors[0].shape)
            for space, _ in first.segments:
                graph._followers[graph._find(space)].append(name)
            return [first]
        return _other(graph, layer, inputs, out)
    if isinstance(layer, L.Flatten) and len(inputs) == 1:
        if first.repeat != 1 or not _channels_last(layer):
            return _other(graph, layer, inputs, out)
        positions = int(np.prod(node.input_tensors[0].shape[1:-1], dtype=int))
        return [_Channels(first.segments, positions)]
    if isinstance(layer, L.Reshape) and len(inputs) == 1:
        # Row-major reshapes that keep the last axis keep every channel.
        same_last = _width(out[0]) == _width(node.input_tensors[0])
        if first.repeat != 1 or not same_last:
            return _other(graph, layer, inputs, out)
        # Its target shape names the channel count: rebuilt with the rest.
        graph._inputs[name] = first
        graph.input_shapes[name] = tuple(node.input_tensors[0].shape)
        return [first]
    if isinstance(layer, PASS_THROUGH) and len(inputs) == 1:
        if not _channels_last(layer) or _mixes_channels(
            getattr(layer, "activation", None)
        ):
            return _other(graph, layer, inputs, out)
        global_pool = "Global" in type(layer).__name__
        if global_pool and first.repeat != 1:
            return _other(graph, layer, inputs, out)
        return [first]
    if isinstance(layer, L.Concatenate) and layer.axis in (-1, rank - 1):
        if any(channels.repeat != 1 for channels in inputs):
            return _other(graph, layer, inputs, out)
        segments = tuple(s for channels in inputs for s in channels.segments)
        return [_Channels(segments)]
    if isinstance(layer, MERGES + (L.Concatenate,)):
        shape = [
            (tuple(size for _, size in c.segments), c.repeat) for c in inputs
        ]
        if len(set(shape)) != 1:
            return _other(
                graph,
                layer,
                inputs,
                out,
                "its inputs split their channels differently (e.g. a "
                "Concatenate added to a single layer's output)",
            )
        for channels in inputs[1:]:
            for (a, _), (b, _) in zip(first.segments, channels.segments):
                graph._union(a, b)
        return [first]
    return _other(graph, layer, inputs, out)


def _other(graph, layer, inputs, outputs, why=None):
    why = why or "channel pruning cannot follow channels through it"
    reason = f"it meets {type(layer).__name__} layer '{layer.name}': {why}"
    for channels in inputs:
        graph._block(channels, reason)
    return [graph._fresh(t, reason) for t in outputs]
