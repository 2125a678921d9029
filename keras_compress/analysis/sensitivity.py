"""Per-layer pruning sensitivity: accuracy when one layer alone is pruned."""

import dataclasses

import keras
import numpy as np

from keras_compress import data_checks
from keras_compress import rewrite
from keras_compress.convert import _native_logs
from keras_compress.convert.verify import class_predictions
from keras_compress.pruning import masks
from keras_compress.pruning import registry

DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """Accuracy of a model with one layer compressed, at several settings.

    Attributes:
        layer: Path of the layer (nested models joined with "/").
        params: Number of values the knob acts on in the layer.
        values: The settings tried, ascending: sparsities, fractions of
            channels removed, or bit-widths (descending for bits).
        accuracies: Accuracy with this layer alone compressed to each
            setting (no fine-tuning).
    """

    layer: str
    params: int
    values: tuple
    accuracies: tuple

    @property
    def sparsities(self):
        """The settings of a pruning scan (`values`)."""
        return self.values

    def accuracy(self, value):
        """The accuracy measured at `value` (one of `values`)."""
        return self.accuracies[self.values.index(value)]

    def max_sparsity(self, baseline_accuracy, max_drop):
        """The highest sparsity tried whose accuracy drop is <= `max_drop`.

        Returns 0.0 when even the lowest sparsity costs more.
        """
        best = 0.0
        for sparsity, accuracy in zip(self.values, self.accuracies):
            # A tolerance for float rounding: accuracies are ratios of counts.
            if baseline_accuracy - accuracy <= max_drop + 1e-9:
                best = sparsity
        return best


# What each kind of scan varies, for reports.
KNOBS = {
    "sparsity": "sparsity of this layer alone",
    "channels": "fraction of this layer's channels removed",
    "bits": "weight bits of this layer alone",
}


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """The result of a sensitivity scan.

    Attributes:
        baseline_accuracy: Accuracy of the uncompressed model on the data.
        layers: One `LayerSensitivity` per layer scanned, in model order.
        knob: What the scan varied: `"sparsity"` (`pruning_sensitivity`),
            `"channels"` (`channel_sensitivity`) or `"bits"`
            (`precision_sensitivity`).
    """

    baseline_accuracy: float
    layers: tuple
    knob: str = "sparsity"

    def sparsity_plan(self, max_drop):
        """`{layer path: sparsity}`, each the most costing <= `max_drop`.

        Layers for which every sparsity tried costs more are left out.
        """
        plan = {}
        for row in self.layers:
            sparsity = row.max_sparsity(self.baseline_accuracy, max_drop)
            if sparsity > 0:
                plan[row.layer] = sparsity
        return plan

    def drop(self, layer, value):
        """Accuracy lost with `layer` alone set to `value` (a tried one)."""
        for row in self.layers:
            if row.layer == layer:
                return self.baseline_accuracy - row.accuracy(value)
        raise KeyError(f"Layer {layer!r} was not scanned.")

    def as_dict(self):
        """The report as plain Python data (e.g. for JSON)."""
        return {
            "knob": self.knob,
            "baseline_accuracy": self.baseline_accuracy,
            "layers": [dataclasses.asdict(row) for row in self.layers],
        }

    @classmethod
    def from_dict(cls, data):
        """Reads back what `as_dict()` gave."""
        return cls(
            baseline_accuracy=float(data["baseline_accuracy"]),
            layers=tuple(
                LayerSensitivity(
                    layer=row["layer"],
                    params=int(row["params"]),
                    # "sparsities": the key before scans had other knobs.
                    values=tuple(row.get("values", row.get("sparsities"))),
                    accuracies=tuple(row["accuracies"]),
                )
                for row in data["layers"]
            ),
            knob=data.get("knob", "sparsity"),
        )

    def __str__(self):
        if not self.layers:
            return f"No layer to scan ({self.knob})."
        values = self.layers[0].values
        if self.knob == "bits":
            shown = [f"{int(v)} bits" for v in values]
        else:
            shown = [f"{v:.0%}" for v in values]
        header = f"{'layer':<32} {'params':>10} " + " ".join(
            f"{v:>7}" for v in shown
        )
        lines = [
            f"Sensitivity: accuracy by {KNOBS[self.knob]} (uncompressed "
            f"{self.baseline_accuracy:.4f})",
            header,
            "-" * len(header),
        ]
        for row in self.layers:
            lines.append(
                f"{row.layer:<32} {row.params:>10,} "
                + " ".join(f"{a:>7.4f}" for a in row.accuracies)
            )
        return "\n".join(lines)


def _accuracy(model, x, y, batch_size):
    # The rule verify() applies to files, so the scan and the budget agree.
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    predicted = class_predictions(outputs)
    return float(np.mean(predicted == data_checks.check_labels(y, "y", len(x))))


def _fractions(values, argument):
    """`values` sorted, each checked to be in (0, 1)."""
    values = tuple(sorted(float(v) for v in values))
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise ValueError(
            f"`{argument}` must be a non-empty list of values in (0, 1); "
            f"received {values!r}."
        )
    return values


def _check_samples(x, y):
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must hold the same number of samples (> 0); "
            f"received {len(x)} and {len(y)}."
        )


def _prunable_layers(model):
    """`[(path, layer)]` of the prunable layers, composites kept whole."""
    found = []
    for path, layer in rewrite.iter_layers(model, include_models=True):
        if isinstance(layer, keras.Model) or not registry.get_prunable_weights(
            layer
        ):
            continue
        # MultiHeadAttention owns prunable EinsumDense layers: the
        # composite is the unit, as in `prune_low_magnitude`.
        if any(path.startswith(parent + "/") for parent, _ in found):
            continue
        found.append((path, layer))
    return found


def pruning_sensitivity(
    model,
    x,
    y,
    sparsities=DEFAULT_SPARSITIES,
    layers=None,
    batch_size=256,
    log=None,
    verbose=0,
):
    """Measures how much accuracy each layer loses when pruned on its own.

    For every prunable layer and every sparsity, the layer's prunable
    weights are magnitude-pruned (smallest |w| to zero) in a copy of
    `model`, every other layer is left intact, and the copy's accuracy on
    `(x, y)` is measured; the weights are then restored. No training
    happens: the figures rank layers by how much they tolerate, which is
    what a per-layer sparsity choice needs (fine-tuning then recovers part
    of each loss).

    Args:
        model: A built Sequential or Functional classifier (one output,
            class scores or logits). It is not changed.
        x: Inputs, batch first.
        y: Integer class labels.
        sparsities: The sparsities to try, each in (0, 1).
        layers: `None` (every prunable layer), or a list of layer names.
        batch_size: Batch size of the evaluations.
        log: Optional callable for one result line per layer.
        verbose: 1 shows a progress bar over the evaluations.

    Returns:
        A `SensitivityReport`.

    Example:

    ```python
    report = kc.analysis.pruning_sensitivity(model, x_val, y_val)
    print(report)
    plan = report.sparsity_plan(max_drop=0.02)   # {layer: sparsity}
    ```
    """
    sparsities = _fractions(sparsities, "sparsities")

    def prune(original, sparsity):
        return original * np.asarray(masks.magnitude_mask(original, sparsity))

    return _weight_scan(
        model,
        x,
        y,
        "sparsity",
        sparsities,
        prune,
        layers,
        batch_size,
        log,
        verbose,
    )


def precision_sensitivity(
    model,
    x,
    y,
    bits=(4,),
    layers=None,
    batch_size=256,
    log=None,
    verbose=0,
):
    """Measures how much accuracy each layer loses with fewer weight bits.

    For every layer with a kernel and every bit-width, the layer's kernels
    are rounded in a copy of `model` to that many bits, symmetric and per
    output channel (the last axis), as a LiteRT file stores them; every
    other layer keeps float weights, and no activation is quantized. The
    figures rank layers by how well they take low-bit weights, which is
    what a per-layer precision choice needs.

    Args:
        model: A built Keras classifier. It is not changed.
        x: Inputs, batch first.
        y: Integer class labels.
        bits: Bit-widths to try, each in [2, 8].
        layers: `None` (every such layer), or a list of layer names.
        batch_size: Batch size of the evaluations.
        log: Optional callable for one result line per layer.
        verbose: 1 shows a progress bar over the evaluations.

    Returns:
        A `SensitivityReport` with `knob="bits"`.

    Example:

    ```python
    report = kc.analysis.precision_sensitivity(model, x_val, y_val, bits=(4,))
    print(report.drop("dense", 4))
    ```
    """
    bits = tuple(sorted({int(b) for b in bits}, reverse=True))
    if not bits or not all(2 <= b <= 8 for b in bits):
        raise ValueError(
            f"`bits` must be a non-empty list of integers in [2, 8]; "
            f"received {bits!r}."
        )
    return _weight_scan(
        model,
        x,
        y,
        "bits",
        bits,
        round_to_bits,
        layers,
        batch_size,
        log,
        verbose,
    )


def round_to_bits(kernel, bits):
    """`kernel` rounded to `bits`-bit symmetric integers per output channel.

    Args:
        kernel: A float array; its last axis holds the output channels.
        bits: Weight bits (2-8).

    Returns:
        A float array of the same shape holding the rounded values.
    """
    kernel = np.asarray(kernel, dtype=np.float32)
    if kernel.ndim < 2:
        return kernel
    levels = 2 ** (bits - 1) - 1
    flat = kernel.reshape(-1, kernel.shape[-1])
    scale = np.max(np.abs(flat), axis=0) / levels
    scale = np.where(scale > 0, scale, 1.0)
    rounded = np.clip(np.round(flat / scale), -levels, levels) * scale
    return rounded.reshape(kernel.shape)


def _weight_scan(
    model, x, y, knob, values, transform, layers, batch_size, log, verbose
):
    """One evaluation per (layer, value) with that layer's kernels changed."""
    _check_samples(x, y)
    # A copy, so the user's model keeps its weights even if this is
    # interrupted halfway through a layer.
    copy = rewrite.copy_layer(model)
    # Report the user's layer paths: a subclassed model's copy has layers
    # of its own names, in the same order.
    original_paths = {
        id(copied): path
        for (path, _), (_, copied) in zip(
            rewrite.iter_layers(model, include_models=True),
            rewrite.iter_layers(copy, include_models=True),
        )
    }
    candidates = [
        (original_paths.get(id(layer), path), layer)
        for path, layer in _prunable_layers(copy)
    ]
    if layers is not None:
        known = {path for path, _ in candidates} | {
            layer.name for _, layer in candidates
        }
        unknown = [name for name in layers if name not in known]
        if unknown:
            raise ValueError(
                f"Layers {unknown} are not layers of '{model.name}' that a "
                f"{knob} scan can change. Those are: "
                f"{[path for path, _ in candidates]}."
            )
        candidates = [
            (path, layer)
            for path, layer in candidates
            if path in layers or layer.name in layers
        ]

    baseline = _accuracy(copy, x, y, batch_size)
    progress = (
        keras.utils.Progbar(len(candidates) * len(values), unit_name="eval")
        if verbose
        else None
    )
    rows = []
    for path, layer in candidates:
        variables = registry.get_prunable_weights(layer)
        originals = [np.array(v.numpy()) for v in variables]
        accuracies = []
        try:
            for value in values:
                for variable, original in zip(variables, originals):
                    variable.assign(transform(original, value))
                accuracies.append(_accuracy(copy, x, y, batch_size))
                if progress is not None:
                    progress.add(1)
        finally:
            for variable, original in zip(variables, originals):
                variable.assign(original)
        rows.append(
            LayerSensitivity(
                layer=path,
                params=int(sum(o.size for o in originals)),
                values=values,
                accuracies=tuple(accuracies),
            )
        )
        if log is not None:
            log(f"  {path}: {_figures(knob, values, accuracies)}")
    return SensitivityReport(
        baseline_accuracy=baseline, layers=tuple(rows), knob=knob
    )


def _figures(knob, values, accuracies):
    if knob == "bits":
        shown = [f"{int(v)} bits" for v in values]
    else:
        shown = [f"{v:.0%}" for v in values]
    return ", ".join(f"{v} -> {a:.4f}" for v, a in zip(shown, accuracies))


def channel_sensitivity(
    model,
    x,
    y,
    ratios=(0.25, 0.5, 0.75),
    batch_size=256,
    log=None,
    verbose=0,
):
    """Measures how much accuracy each channel group loses when thinned.

    For every group of layers whose output channels channel pruning can
    remove (`keras_compress.pruning.channel_plan`; layers tied by a merge
    form one group), and every ratio, that group alone loses the ratio of
    its channels with the lowest L1 norm, and the smaller model's accuracy
    is measured. No training happens.

    Args:
        model: A built Sequential or Functional classifier. It is not
            changed.
        x: Inputs, batch first.
        y: Integer class labels.
        ratios: Fractions of channels to remove, each in (0, 1).
        batch_size: Batch size of the evaluations.
        log: Optional callable for one result line per group.
        verbose: 1 shows a progress bar over the evaluations.

    Returns:
        A `SensitivityReport` with `knob="channels"`; each row is named by
        the group's first producer layer (the name a per-layer ratio of
        `prune_channels` takes), its `params` are the producers' weights.

    Raises:
        ValueError: For a subclassed model (channel pruning rebuilds
            Sequential and Functional models only).

    Example:

    ```python
    report = kc.analysis.channel_sensitivity(model, x_val, y_val)
    print(report)
    ```
    """
    from keras_compress.pruning import structured

    ratios = _fractions(ratios, "ratios")
    _check_samples(x, y)
    plan = structured.channel_plan(model, 0.0)
    groups = [g for g in plan.graph.groups if g.prunable]
    by_name = {layer.name: layer for _, layer in rewrite.iter_layers(model)}
    baseline = _accuracy(model, x, y, batch_size)
    progress = (
        keras.utils.Progbar(len(groups) * len(ratios), unit_name="eval")
        if verbose
        else None
    )
    rows = []
    for group in groups:
        name = group.producers[0]
        accuracies = []
        for ratio in ratios:
            # Each smaller model is a new graph: TensorFlow warns about
            # retracing, which is expected here.
            with _native_logs.captured():
                smaller = structured.prune_channels(model, layers={name: ratio})
                accuracies.append(_accuracy(smaller, x, y, batch_size))
            del smaller
            if progress is not None:
                progress.add(1)
        params = sum(
            sum(int(np.prod(w.shape)) for w in by_name[p].weights)
            for p in group.producers
        )
        rows.append(
            LayerSensitivity(
                layer=name,
                params=params,
                values=ratios,
                accuracies=tuple(accuracies),
            )
        )
        if log is not None:
            log(f"  {name}: {_figures('channels', ratios, accuracies)}")
    return SensitivityReport(
        baseline_accuracy=baseline, layers=tuple(rows), knob="channels"
    )
