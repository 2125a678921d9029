"""Parameters and FLOPs of every layer of a model.

FLOPs are counted as 2 x multiply-accumulates for one sample at the model's
input shape, for the layers whose cost is a weight contraction (Dense,
EinsumDense, convolutions) plus BatchNormalization (one multiply-add per
element, when it is kept in the model). Other layers count 0 FLOPs; their
parameters are still counted.

The shapes each layer sees are found by running the model once on a batch
of one zero sample and recording every leaf layer's call, so Sequential,
Functional, nested and subclassed models are all handled, and a layer
called twice is counted twice.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_compress import rewrite

L = keras.layers


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """Cost of one layer.

    Attributes:
        name: Path of the layer (nested models joined with "/").
        class_name: The layer's class.
        params: Number of weights (trainable and not).
        flops: 2 x multiply-accumulates for one sample (all its calls).
    """

    name: str
    class_name: str
    params: int
    flops: int


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Per-layer parameters and FLOPs of a model.

    Attributes:
        name: The model's name.
        layers: One `LayerProfile` per leaf layer, in the model's layer order.
    """

    name: str
    layers: tuple

    @property
    def total_params(self):
        return sum(layer.params for layer in self.layers)

    @property
    def total_flops(self):
        return sum(layer.flops for layer in self.layers)

    def as_dict(self):
        """The profile as plain Python data (e.g. for JSON)."""
        return {
            "name": self.name,
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "total_params": self.total_params,
            "total_flops": self.total_flops,
        }

    def __str__(self):
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [
            f"Profile of '{self.name}' (FLOPs = 2 x MACs for one sample)",
            f"{'layer':<{width}}  {'class':<22} {'params':>12} {'FLOPs':>14}",
        ]
        for layer in self.layers:
            lines.append(
                f"{layer.name:<{width}}  {layer.class_name:<22} "
                f"{layer.params:>12,} {layer.flops:>14,}"
            )
        lines.append(
            f"{'total':<{width}}  {'':<22} {self.total_params:>12,} "
            f"{self.total_flops:>14,}"
        )
        return "\n".join(lines)


def _size(shape):
    return math.prod(int(d) for d in shape)


def _positions(shape):
    # Spatial (or sequence) positions of a channels-last activation.
    return _size(shape[1:-1]) if len(shape) > 2 else 1


def _value_size(variable):
    return _size(variable.shape)


def _layer_flops(layer, input_shape, output_shape):
    """2 x MACs of one call with batch size 1."""
    if isinstance(layer, L.SeparableConv1D | L.SeparableConv2D):
        positions = _positions(output_shape)
        depthwise = _value_size(layer.depthwise_kernel)
        pointwise = _value_size(layer.pointwise_kernel)
        return 2 * positions * (depthwise + pointwise)
    if isinstance(layer, L.DepthwiseConv1D | L.DepthwiseConv2D):
        return 2 * _positions(output_shape) * _value_size(layer.kernel)
    if isinstance(
        layer, L.Conv1DTranspose | L.Conv2DTranspose | L.Conv3DTranspose
    ):
        # Every input position is multiplied by the whole kernel.
        return 2 * _positions(input_shape) * _value_size(layer.kernel)
    if isinstance(layer, L.Conv1D | L.Conv2D | L.Conv3D):
        return 2 * _positions(output_shape) * _value_size(layer.kernel)
    if isinstance(layer, L.Dense):
        return 2 * _value_size(layer.kernel) * _size(output_shape[1:-1])
    if isinstance(layer, L.EinsumDense):
        inputs, out = layer.equation.split("->")
        kernel_letters = inputs.split(",")[1]
        kernel_shape = layer.kernel.shape
        produced = _size(
            d for d, c in zip(kernel_shape, kernel_letters) if c in out
        )
        # Each output element is one dot product over the kernel's other axes.
        return 2 * _size(output_shape) // produced * _value_size(layer.kernel)
    if isinstance(layer, L.BatchNormalization):
        return 2 * _size(output_shape)
    return 0


def _first_shape(value):
    tensors = [t for t in keras.tree.flatten(value) if hasattr(t, "shape")]
    return tuple(tensors[0].shape) if tensors else ()


def _sample_inputs(model):
    if rewrite.is_graph_model(model):
        specs = model.inputs
        shapes = [tuple(t.shape) for t in specs]
        dtypes = [t.dtype for t in specs]
        if any(None in shape[1:] for shape in shapes):
            raise ValueError(
                f"profile() needs fixed input shapes to count FLOPs, but "
                f"'{model.name}' takes inputs of shapes {shapes}. Build it "
                "with a fully defined keras.Input(shape=...)."
            )
        arrays = [
            np.zeros((1, *shape[1:]), dtype)
            for shape, dtype in zip(shapes, dtypes)
        ]
        return arrays[0] if len(arrays) == 1 else arrays
    build_config = model.get_build_config() or {}
    shape = build_config.get("input_shape")
    if shape is None or not isinstance(shape, (list, tuple)):
        raise ValueError(
            f"profile() cannot find the input shape of subclassed model "
            f"'{model.name}' ({type(model).__name__}). Build it with "
            "model.build(input_shape) or call it on a batch first."
        )
    if shape and isinstance(shape[0], (list, tuple)):
        raise ValueError(
            f"profile() supports subclassed models with one input; "
            f"'{model.name}' was built with shapes {shape}. Wrap it in a "
            "Functional model with keras.Input()s and profile that."
        )
    if None in tuple(shape)[1:]:
        raise ValueError(
            f"profile() needs a fixed input shape; '{model.name}' was built "
            f"with {tuple(shape)}."
        )
    return np.zeros((1, *tuple(shape)[1:]), "float32")


def profile(model):
    """Counts the parameters and FLOPs of every layer of `model`.

    Args:
        model: A built Keras model (Sequential, Functional, nested or
            subclassed) with fixed input shapes.

    Returns:
        A `ModelProfile`.

    Raises:
        ValueError: If the model is not built or its input shape is not
            known or not fixed.

    Example:

    ```python
    report = keras_compress.analysis.profile(model)
    print(report)                   # a per-layer table
    report.total_flops              # for one sample
    ```
    """
    rewrite.check_built(model)
    paths = {id(layer): path for path, layer in rewrite.iter_layers(model)}
    leaves = [layer for _, layer in rewrite.iter_layers(model)]
    flops = {id(layer): 0 for layer in leaves}
    sample = _sample_inputs(model)
    originals = {}

    def traced(layer, call):
        def call_and_record(*args, **kwargs):
            outputs = call(*args, **kwargs)
            flops[id(layer)] += _layer_flops(
                layer, _first_shape((args, kwargs)), _first_shape(outputs)
            )
            return outputs

        return call_and_record

    for layer in leaves:
        if id(layer) in originals:
            continue
        # An instance attribute shadows the class's `call` for this one run.
        originals[id(layer)] = layer
        object.__setattr__(layer, "call", traced(layer, layer.call))
    try:
        model(sample, training=False)
    finally:
        for layer in originals.values():
            object.__delattr__(layer, "call")
    rows = tuple(
        LayerProfile(
            name=paths[id(layer)],
            class_name=type(layer).__name__,
            params=int(layer.count_params()) if layer.built else 0,
            flops=int(flops[id(layer)]),
        )
        for layer in leaves
    )
    return ModelProfile(model.name, rows)


def _ratio(after, before):
    return f"{after / before:.2f}x" if before else "-"


def compare_profiles(before, after):
    """A before/after table of two profiles, with ratios.

    Layers are matched by name (by position if both models have the same
    layer classes in the same order but other names, e.g. the same
    architecture built twice); a layer in only one profile shows `-` on
    the other side.

    Args:
        before: `ModelProfile` of the original model.
        after: `ModelProfile` of the compressed model.

    Returns:
        A string: one row per layer and a total row.

    Example:

    ```python
    print(compare_profiles(profile(model), profile(small)))
    ```
    """
    old = {layer.name: layer for layer in before.layers}
    new = {layer.name: layer for layer in after.layers}
    same_classes = [layer.class_name for layer in before.layers] == [
        layer.class_name for layer in after.layers
    ]
    if same_classes and old.keys() != new.keys():
        # The same architecture built twice gets other automatic names
        # ("conv2d_7"): match layer by layer instead.
        new = {b.name: a for b, a in zip(before.layers, after.layers)}
    names = [layer.name for layer in before.layers]
    names += [name for name in new if name not in old]
    width = max([len(name) for name in names] + [5])
    header = (
        f"{'layer':<{width}}  {'params':>10} {'->':>2} {'params':>10} "
        f"{'ratio':>6}  {'FLOPs':>12} {'->':>2} {'FLOPs':>12} {'ratio':>6}"
    )
    lines = [f"'{before.name}' -> '{after.name}'", header]

    def row(name, b_params, a_params, b_flops, a_flops):
        def show(value):
            return "-" if value is None else f"{value:,}"

        params_ratio = (
            _ratio(a_params, b_params)
            if None not in (a_params, b_params)
            else "-"
        )
        flops_ratio = (
            _ratio(a_flops, b_flops) if None not in (a_flops, b_flops) else "-"
        )
        return (
            f"{name:<{width}}  {show(b_params):>10} {'->':>2} "
            f"{show(a_params):>10} {params_ratio:>6}  {show(b_flops):>12} "
            f"{'->':>2} {show(a_flops):>12} {flops_ratio:>6}"
        )

    for name in names:
        b, a = old.get(name), new.get(name)
        lines.append(
            row(
                name,
                b.params if b else None,
                a.params if a else None,
                b.flops if b else None,
                a.flops if a else None,
            )
        )
    lines.append(
        row(
            "total",
            before.total_params,
            after.total_params,
            before.total_flops,
            after.total_flops,
        )
    )
    return "\n".join(lines)
