"""Folding BatchNormalization layers into the layer before them.

`fold_batch_norms(model)` returns a copy of a Sequential or Functional model
(nested ones included) in which every BatchNormalization that directly
follows a Dense or convolution, and is that layer's only consumer, is folded
into it: the kernel is scaled per output channel and the bias shifted
(created if the layer had none). The model computes what the original
computes in inference, with one layer fewer per pair and no MUL/ADD for the
BatchNorm in the converted file.

The arithmetic is that of QAT's folding,
`keras_compress.quantization.batch_norm_folding`; this module only finds the
pairs in the graph and rebuilds the model with `rewrite.clone_and_replace`.
"""

import dataclasses
import warnings

import keras

from keras_compress import rewrite
from keras_compress.core import batch_norm as core_batch_norm
from keras_compress.quantization import batch_norm_folding as folding


@dataclasses.dataclass(frozen=True)
class FoldingReport:
    """What `fold_batch_norms` did with each BatchNormalization.

    Paths join layer names with "/" for layers of nested models.

    Attributes:
        folded: `(batch_norm_path, layer_path)` pairs: the BatchNorm and
            the layer it was folded into.
        kept: `(batch_norm_path, reason)` pairs for the BatchNorms left in
            the model.
    """

    folded: tuple
    kept: tuple

    def as_dict(self):
        """The report as plain Python data (e.g. for JSON)."""
        return {
            "folded": [{"batch_norm": b, "into": i} for b, i in self.folded],
            "kept": [{"batch_norm": b, "reason": r} for b, r in self.kept],
        }

    def __str__(self):
        lines = [
            f"{len(self.folded)} BatchNormalization layer(s) folded, "
            f"{len(self.kept)} kept"
        ]
        lines += [f"  folded {b} into {i}" for b, i in self.folded]
        lines += [f"  kept {b}: {r}" for b, r in self.kept]
        return "\n".join(lines)


def fold_batch_norms(model, *, return_report=False):
    """Returns a copy of `model` with BatchNorms folded into the layer before.

    A `BatchNormalization` is folded when its input is the output of a
    Dense, Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D or
    SeparableConv1D/2D (into its pointwise kernel) that

    - has a linear activation (a BatchNorm after a ReLU is not an affine
      map of the layer's output),
    - is called once, and whose output feeds only that BatchNorm,

    and when the BatchNorm normalizes the last (channel) axis. The layer's
    kernel is multiplied by `gamma / sqrt(moving_variance + epsilon)` per
    output channel and its bias becomes `bias * scale + beta - moving_mean
    * scale` (a bias is added if the layer had none). The BatchNorm is
    replaced by a `keras.layers.Identity` of the same name, so the model's
    layer names and positions stay as they were; it costs nothing at run
    time and the LiteRT converter drops it.

    Folding uses the moving statistics, i.e. **inference** semantics: the
    copy computes `model(x, training=False)` (what `predict` and the
    converted file compute). In training mode a BatchNorm normalizes with
    the batch's own statistics, which the copy no longer does, even when
    called with `training=True`. Fold after training, for deployment; to
    keep training with folded weights, use quantization-aware training
    (`keras_compress.quantization.quantize_model`), which folds while
    training.

    BatchNorms that cannot be folded (after an Add, after a layer with an
    activation or with other consumers, inside a nested subclassed model,
    ...) stay in the copy unchanged. Each is listed with the reason in the
    report (`return_report=True`), or in a warning otherwise.

    Args:
        model: A built Sequential or Functional `keras.Model` (nested models
            are handled). It is not changed.
        return_report: If `True`, also return a `FoldingReport`.

    Returns:
        A new `keras.Model` of the same kind, or `(model, report)` with
        `return_report=True`.

    Raises:
        ValueError: If `model` is a subclassed model (its `call()` is
            Python code, so which layer feeds a BatchNorm is unknown) or
            is not built.

    Example:

    ```python
    folded, report = kc.fusion.fold_batch_norms(model, return_report=True)
    print(report)          # which BatchNorms were folded, and why not
    blob = kc.convert.to_tflite(folded)
    ```
    """
    rewrite.check_is_model(model)
    if not rewrite.is_graph_model(model):
        raise ValueError(
            f"fold_batch_norms() needs a Sequential or Functional model; "
            f"'{model.name}' is a subclassed {type(model).__name__}, whose "
            "call() is Python code, so which layer feeds each "
            "BatchNormalization is unknown. Build the model with the "
            "Functional API (or fold inside it by hand with "
            "keras_compress.quantization.fold_batch_norm(layer, batch_norm))."
        )
    rewrite.check_built(model)
    replacements = {}
    folded, kept = [], []
    _plan(model, "", replacements, folded, kept)
    new_model = rewrite.clone_and_replace(
        model, lambda layer: replacements.get(id(layer), lambda: None)()
    )
    report = FoldingReport(tuple(folded), tuple(kept))
    if return_report:
        return new_model, report
    if kept:
        warnings.warn(
            f"fold_batch_norms('{model.name}') kept "
            f"{len(kept)} BatchNormalization layer(s) it cannot fold: "
            + "; ".join(f"'{path}': {reason}" for path, reason in kept)
            + ". Pass return_report=True to get this as a FoldingReport.",
            stacklevel=2,
        )
    return new_model


def _plan(model, prefix, replacements, folded, kept):
    """Finds the foldable pairs of a graph model and of its nested ones.

    Fills `replacements` (`id(layer)` -> a function making its new layer),
    and the `folded`/`kept` lists of the report.
    """
    calls = rewrite.graph_calls(model)
    seen = set()
    for node in calls.nodes:
        layer = node.operation
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = prefix + layer.name
        if rewrite.is_graph_model(layer):
            _plan(layer, path + "/", replacements, folded, kept)
            continue
        if isinstance(layer, keras.Model):
            for inner_path, inner in rewrite.iter_layers(layer):
                if isinstance(inner, keras.layers.BatchNormalization):
                    kept.append(
                        (
                            f"{path}/{inner_path}",
                            f"it is inside the subclassed model '{path}', "
                            "whose call() order is unknown",
                        )
                    )
            continue
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        source, reason = core_batch_norm.fold_source(node, calls)
        if reason is not None:
            kept.append((path, reason))
            continue
        folded.append((path, prefix + source.name))
        replacements[id(source)] = lambda source=source, batch_norm=layer: (
            folding.fold_batch_norm(source, batch_norm)
        )
        replacements[id(layer)] = lambda name=layer.name: keras.layers.Identity(
            name=name
        )
