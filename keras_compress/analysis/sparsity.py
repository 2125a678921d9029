"""Per-layer and total sparsity of a model."""

import dataclasses

import numpy as np

from keras_compress import rewrite


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one weight.

    Attributes:
        layer: Path of the layer (nested models joined with "/").
        weight: Name of the weight.
        shape: Shape of the weight.
        params: Number of values.
        zeros: Number of exact zeros.
    """

    layer: str
    weight: str
    shape: tuple
    params: int
    zeros: int

    @property
    def sparsity(self):
        return self.zeros / self.params if self.params else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Sparsity of every weight of a model, with totals.

    Attributes:
        rows: One `LayerSparsity` per weight.
    """

    rows: tuple

    @property
    def total_params(self):
        return sum(row.params for row in self.rows)

    @property
    def total_zeros(self):
        return sum(row.zeros for row in self.rows)

    @property
    def total_sparsity(self):
        total = self.total_params
        return self.total_zeros / total if total else 0.0

    def as_dict(self):
        """The report as plain Python data (e.g. for JSON)."""
        return {
            "layers": [
                {**dataclasses.asdict(row), "sparsity": row.sparsity}
                for row in self.rows
            ],
            "total_params": self.total_params,
            "total_zeros": self.total_zeros,
            "total_sparsity": self.total_sparsity,
        }

    def __str__(self):
        lines = [f"{'layer/weight':<48} {'params':>10} {'sparsity':>9}"]
        for row in self.rows:
            name = f"{row.layer}/{row.weight}"
            lines.append(f"{name:<48} {row.params:>10,} {row.sparsity:>9.1%}")
        lines.append(
            f"{'total':<48} {self.total_params:>10,} "
            f"{self.total_sparsity:>9.1%}"
        )
        return "\n".join(lines)


def sparsity_report(model, include_non_trainable=False):
    """Counts exact zeros per weight of `model`.

    Pruning masks and step counters (the state of pruned layers) are left
    out, so a pruned model and its stripped copy give the same report.

    Args:
        model: A built `keras.Model`.
        include_non_trainable: Also report non-trainable weights such as
            BatchNormalization's moving statistics.

    Returns:
        A `SparsityReport`; `print(report)` shows a table.

    Example:

    ```python
    report = kc.analysis.sparsity_report(pruned)
    print(report)
    report.total_sparsity  # e.g. 0.79
    ```
    """
    from keras_compress.pruning import prune_api

    rewrite.check_built(model)
    pruning_state = set()
    for pruner in prune_api.get_pruners(model):
        pruning_state.update(id(v) for v in pruner.masks)
        pruning_state.add(id(pruner.step))
    rows = []
    seen = set()
    for path, layer in rewrite.iter_layers(model):
        weights = (
            layer.weights if include_non_trainable else layer.trainable_weights
        )
        for weight in weights:
            if id(weight) in seen or id(weight) in pruning_state:
                continue
            seen.add(id(weight))
            value = np.asarray(weight.numpy())
            rows.append(
                LayerSparsity(
                    layer=path,
                    weight=weight.name,
                    shape=tuple(value.shape),
                    params=int(value.size),
                    zeros=int(np.count_nonzero(value == 0)),
                )
            )
    return SparsityReport(tuple(rows))
