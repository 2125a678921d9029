"""The one rule for which BatchNormalization folds into which layer.

`fold_batch_norms` (inference) and QAT (`quantize_model`) both fold a
BatchNormalization into the Dense or convolution whose output it takes.
Folding rewrites the producer's weights, so it is only right when the
producer's output reaches nothing but the BatchNorm, and both layers are
called once. `fold_source` checks that on the graph; the per-layer part
(a kernel to scale, no activation in between, the channel axis) is
`quantization.batch_norm_folding.why_not_foldable`.
"""

import keras

from keras_compress.core import keras_private


def fold_source(node, calls):
    """The layer the BatchNorm called at `node` folds into, or why not.

    Args:
        node: A graph node whose operation is a `BatchNormalization`.
        calls: The `rewrite.GraphCalls` of the graph holding `node`.

    Returns:
        `(layer, None)` if it folds into `layer`, else `(None, reason)`.
    """
    # Imported here: quantization imports the core.
    from keras_compress.quantization import batch_norm_folding

    batch_norm = node.operation
    uses = calls.uses
    if uses[id(batch_norm)] != 1:
        return None, (
            f"it is called {uses[id(batch_norm)]} times (a shared "
            "BatchNormalization cannot be folded into one layer)"
        )
    if len(node.input_tensors) != 1:
        return None, "it takes several inputs"
    (tensor,) = node.input_tensors
    source = keras_private.producer(tensor)
    if source is None or isinstance(source, keras.layers.InputLayer):
        return None, "its input is a model input"
    source_name = f"'{source.name}' ({type(source).__name__})"
    if isinstance(source, keras.Model):
        return (
            None,
            f"its input is the output of the nested model {source_name}",
        )
    reason = batch_norm_folding.why_not_foldable(source, batch_norm)
    if reason is not None:
        return None, f"it follows {source_name}: {reason}"
    if uses[id(source)] != 1:
        return None, (
            f"it follows {source_name}, which is called "
            f"{uses[id(source)]} times (shared)"
        )
    others = [
        "a model output" if c is None else f"'{c.name}'"
        for c in calls.consumers.get(id(tensor), ())
        if c is not batch_norm
    ]
    if others:
        return None, (
            f"the output of {source_name} is also used by "
            f"{', '.join(others)}; folding would change it for them"
        )
    return source, None
