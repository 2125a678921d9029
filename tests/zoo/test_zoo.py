"""The architecture zoo: real `keras.applications` networks and KerasHub
models through every technique, converted and verified.

Each cell builds an architecture (`architectures.py`), applies a technique
the way the conformance matrix does (`tests/conformance/test_matrix.py`:
the same functions), trains one epoch on 32 images, strips, converts to
LiteRT and runs the file on more images:

- float files: max |file - Keras| <= 1e-4 of the largest output magnitude;
- int8 files: >= 98 % of the outputs within one quantization step of the
  output tensor; the ops the file computes in float are recorded.

Each cell records its wall time (apply + train, convert) and the process's
peak memory as JUnit properties; `benchmarks/zoo_benchmark.py` runs every
cell and writes the table of `docs/zoo.md`. CI runs the cells of
`CI_CELLS` (the full zoo takes most of an hour on 2 cores); set
`KERAS_COMPRESS_ZOO=all` to run all of them.
"""

import os
import resource
import time

import keras
import numpy as np
import pytest

import keras_compress as kc
from tests.conformance import test_matrix
from tests.zoo import architectures

TECHNIQUES = (
    "prune",
    "2:4",
    "qat",
    "cluster",
    "channel_prune",
    "fold_batch_norms",
    "factorize",
)
# (architecture, technique) -> regex of the ValueError the library must
# raise. Only genuine, documented limitations belong here.
UNSUPPORTED = {
    # Their Dense layers are inside KerasHub's Transformer blocks, custom
    # layers whose call() cannot be rebuilt with fewer channels or with
    # two layers in place of one; the graph around them has no other.
    ("GPT2", "channel_prune"): r"prune_channels\(\) found no channel",
    ("GPT2", "factorize"): r"factorize\(\) found no Dense or Conv2D layer",
    ("DINOv2", "channel_prune"): r"prune_channels\(\) found no channel",
}
assert all(a in architectures.ARCHITECTURES for a, _ in UNSUPPORTED)
# One keras.applications network (hard-swish, squeeze-excite, Rescaling)
# and one KerasHub model (custom Transformer blocks, dict inputs, an int8
# token lookup), both through QAT, the technique with the most to get wrong.
CI_CELLS = (("MobileNetV3Small", "qat"), ("BERT", "qat"))
FLOAT_RTOL = 1e-4
MIN_FRACTION_WITHIN_ONE_STEP = 0.98


def _fold_batch_norms(model, x, y):
    # Real architectures put BatchNorms where no kernel precedes them
    # (pre-activation blocks: after a pooling or a Concatenate); those are
    # kept, each with its reason. What folding promises is the same
    # inference.
    folded, report = kc.fusion.fold_batch_norms(model, return_report=True)
    has_batch_norm = any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model._flatten_layers(include_self=False)
    )
    assert bool(report.folded) == has_batch_norm, str(report)
    assert all(reason for _, reason in report.kept), str(report)
    np.testing.assert_allclose(
        test_matrix._predict(folded, x),
        test_matrix._predict(model, x),
        atol=FLOAT_RTOL * float(np.abs(test_matrix._predict(model, x)).max()),
    )
    return test_matrix.Deployable(folded)


APPLY = {**test_matrix.APPLY, "fold_batch_norms": _fold_batch_norms}


def _cells():
    if os.environ.get("KERAS_COMPRESS_ZOO") == "all":
        cells = [
            (a, t) for a in architectures.ARCHITECTURES for t in TECHNIQUES
        ]
    else:
        cells = CI_CELLS
    return [pytest.param(a, t, id=f"{a}-{t}") for a, t in cells]


def _peak_memory_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("architecture, technique", _cells())
def test_cell(architecture, technique, record_property):
    model, x, y = architectures.build(architecture)
    before = model.get_weights()
    apply = APPLY[technique]
    if (architecture, technique) in UNSUPPORTED:
        with pytest.raises(
            ValueError, match=UNSUPPORTED[architecture, technique]
        ):
            apply(model, x, y)
        return

    start = time.perf_counter()
    deployable = apply(model, x, y)
    record_property("apply_s", round(time.perf_counter() - start, 2))
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)

    start = time.perf_counter()
    options = {}
    if deployable.mode == "int8":
        options["representative_data"] = x
    content = kc.convert.to_tflite(
        deployable.model, deployable.mode, verbose=0, **options
    )
    record_property("convert_s", round(time.perf_counter() - start, 2))
    record_property("bytes", len(content))

    probe = architectures.probe_inputs(architecture)
    expected = test_matrix._predict(deployable.model, probe)
    actual = kc.convert.run_tflite(content, probe)
    diff = np.abs(actual - expected)
    record_property("peak_memory_mb", round(_peak_memory_mb()))
    if deployable.mode == "float32":
        scale = float(np.abs(expected).max())
        assert diff.max() <= FLOAT_RTOL * scale, (
            f"max |diff| {diff.max():.3g} for outputs up to {scale:.3g}"
        )
        return
    float_ops = kc.convert.verify(
        deployable.model,
        content,
        keras.tree.map_structure(lambda a: a[:8], probe),
        latency_runs=0,
    ).float_ops
    record_property("float_ops", ", ".join(float_ops or ()) or "none")
    step = test_matrix._output_step(content)
    within_one = float(np.mean(diff <= step * 1.001))
    record_property("within_one_step", round(within_one, 4))
    assert within_one >= MIN_FRACTION_WITHIN_ONE_STEP, (
        f"only {within_one:.2%} of the int8 file's outputs within one step "
        f"({step:.3g}); max diff {diff.max():.3g} "
        f"({diff.max() / step:.1f} steps); float ops: {float_ops}"
    )
