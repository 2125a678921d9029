"""Per-layer pruning sensitivity: accuracy when one layer alone is pruned."""

import dataclasses

import keras
import numpy as np

from keras_compress import data_checks
from keras_compress import rewrite
from keras_compress.convert.verify import class_predictions
from keras_compress.pruning import masks
from keras_compress.pruning import registry

DEFAULT_SPARSITIES = (0.5, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """Accuracy of a model with one layer pruned, at several sparsities.

    Attributes:
        layer: Path of the layer (nested models joined with "/").
        params: Number of prunable values in the layer.
        sparsities: The sparsities tried, ascending.
        accuracies: Accuracy with this layer alone pruned to each sparsity
            (magnitude pruning, no fine-tuning).
    """

    layer: str
    params: int
    sparsities: tuple
    accuracies: tuple

    def max_sparsity(self, baseline_accuracy, max_drop):
        """The highest sparsity tried whose accuracy drop is <= `max_drop`.

        Returns 0.0 when even the lowest sparsity costs more.
        """
        best = 0.0
        for sparsity, accuracy in zip(self.sparsities, self.accuracies):
            # A tolerance for float rounding: accuracies are ratios of counts.
            if baseline_accuracy - accuracy <= max_drop + 1e-9:
                best = sparsity
        return best


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """The result of `pruning_sensitivity`.

    Attributes:
        baseline_accuracy: Accuracy of the unpruned model on the same data.
        layers: One `LayerSensitivity` per prunable layer, in model order.
    """

    baseline_accuracy: float
    layers: tuple

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

    def as_dict(self):
        """The report as plain Python data (e.g. for JSON)."""
        return {
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
                    sparsities=tuple(row["sparsities"]),
                    accuracies=tuple(row["accuracies"]),
                )
                for row in data["layers"]
            ),
        )

    def __str__(self):
        if not self.layers:
            return "No prunable layer."
        sparsities = self.layers[0].sparsities
        header = f"{'layer':<32} {'params':>10} " + " ".join(
            f"{s:>7.0%}" for s in sparsities
        )
        lines = [
            f"Pruning sensitivity (accuracy; unpruned "
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
    sparsities = tuple(sorted(float(s) for s in sparsities))
    if not sparsities or not all(0.0 < s < 1.0 for s in sparsities):
        raise ValueError(
            "`sparsities` must be a non-empty list of values in (0, 1); "
            f"received {sparsities!r}."
        )
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must hold the same number of samples (> 0); "
            f"received {len(x)} and {len(y)}."
        )
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
                f"Layers {unknown} are not prunable layers of "
                f"'{model.name}'. Prunable layers: "
                f"{[path for path, _ in candidates]}."
            )
        candidates = [
            (path, layer)
            for path, layer in candidates
            if path in layers or layer.name in layers
        ]

    baseline = _accuracy(copy, x, y, batch_size)
    progress = (
        keras.utils.Progbar(len(candidates) * len(sparsities), unit_name="eval")
        if verbose
        else None
    )
    rows = []
    for path, layer in candidates:
        variables = registry.get_prunable_weights(layer)
        originals = [np.array(v.numpy()) for v in variables]
        accuracies = []
        try:
            for sparsity in sparsities:
                for variable, original in zip(variables, originals):
                    mask = masks.magnitude_mask(original, sparsity)
                    variable.assign(original * np.asarray(mask))
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
                sparsities=sparsities,
                accuracies=tuple(accuracies),
            )
        )
        if log is not None:
            steps = zip(sparsities, accuracies)
            figures = ", ".join(f"{s:.0%} -> {a:.4f}" for s, a in steps)
            log(f"  {path}: {figures}")
    return SensitivityReport(baseline_accuracy=baseline, layers=tuple(rows))
