"""Conformance matrix: every technique on every model kind, on this backend.

Each cell builds a tiny model (`models.build`), applies one technique the
way the docs show it, trains one epoch on 32 samples, strips it to the
deployable model and checks that

- the user's model is unchanged (weights and BatchNorm statistics);
- the deployable model saves to `.keras` and loads back without
  `custom_objects`, computing the same outputs;
- `keras_compress.convert.to_tflite` converts it (float32, or int8 for the
  quantization-aware techniques) and the file computes what the Keras model
  computes: float files within 1e-4 on the 32 inputs, int8 files with
  >= 98 % of the outputs within one quantization step of the output tensor
  on 256 more inputs.

The Keras backend is the one the test process runs with (`KERAS_BACKEND`:
tensorflow, jax or torch). Cells the library cannot support by design are
listed in `UNSUPPORTED`, with the error message they must raise.
`coverage_table.py` turns a run of this file into the docs table.
"""

import dataclasses
import warnings

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress import rewrite
from keras_compress.core import training
from tests.conformance import models

# (kind, technique) -> regex of the ValueError the library must raise.
# Only genuine, documented limitations belong here.
UNSUPPORTED = {
    ("subclassed", "channel_prune"): (
        r"Channel pruning rebuilds the model from its graph, but "
        r"'subclassed' is a subclassed SubclassedCNN"
    ),
    ("subclassed", "fold_batch_norms"): (
        r"fold_batch_norms\(\) needs a Sequential or Functional model"
    ),
    ("subclassed", "factorize"): (
        r"factorize\(\) needs a Sequential or Functional model"
    ),
    # Only the output Dense has channels; LSTM/attention are not
    # channel-pruned.
    ("rnn", "channel_prune"): r"prune_channels\(\) found no channel",
    ("attention", "channel_prune"): r"prune_channels\(\) found no channel",
    # QAT cannot simulate a recurrent loop's int8 file.
    ("rnn", "qat"): r"Layer 'lstm' \(LSTM\) is recurrent",
    ("rnn", "prune_qat"): r"Layer 'lstm' \(LSTM\) is recurrent",
    ("rnn", "prune_cluster_qat"): r"Layer 'lstm' \(LSTM\) is recurrent",
    ("rnn", "compress_recipe"): r"Layer 'lstm' \(LSTM\) is recurrent",
}

TECHNIQUES = (
    "prune",
    "2:4",
    "qat",
    "prune_qat",
    "cluster",
    "prune_cluster_qat",
    "channel_prune",
    "fold_batch_norms",
    "factorize",
    "distiller",
    "compress",
    "compress_recipe",
    "compress_budget",
)

NUM_SAMPLES = models.NUM_SAMPLES
FLOAT_ATOL = 1e-4
RELOAD_ATOL = 1e-5
MIN_FRACTION_WITHIN_ONE_STEP = 0.98
# Math written in Python in a `call()` (the subclassed model's
# `relu(x) * 0.5`, the residual `x + y` of the attention kind's custom
# block): QAT cannot see it, so it does not round where the file's int8
# RELU/MUL/ADD do. Measured over the three backends: subclassed 96.97-100 %
# of the outputs within one step, at most 3 steps off; attention (its
# block's LayerNorm compounds the differences) 97.5-97.6 % on JAX, at most
# 3 steps. The documented guarantee for such models is this looser one
# (docs/quantization.md); a model whose math is in layers gets the 98 %
# above.
MIN_FRACTION_WITHIN_ONE_STEP_BY_KIND = {"subclassed": 0.95, "attention": 0.95}


@dataclasses.dataclass
class Deployable:
    """What a technique hands over: the model to save and convert."""

    model: object
    mode: str = "float32"  # to_tflite mode: "float32" or "int8"
    content: bytes = None  # a file the technique already converted


# Helpers.


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fit(model, x, y, callbacks=(), eagerly=False):
    # Models with the library's wrappers train compiled (tf.function,
    # jax.jit), as users train them. `eagerly` is for the earlier stages of
    # a combined technique (their own cell trains them compiled) and for
    # plain Keras models (channel-pruned, factorized): on TensorFlow it
    # saves a trace per fit. (Eager JAX is slower than jit; PyTorch always
    # runs eagerly.)
    eagerly = eagerly and keras.backend.backend() == "tensorflow"
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=_loss(), run_eagerly=eagerly
    )
    # One trace of the train step instead of two on TensorFlow, as in the
    # library's own fits (the Distiller, compress()): the same training.
    training.build_optimizer(model)
    model.fit(
        x, y, batch_size=16, epochs=1, verbose=0, callbacks=list(callbacks)
    )
    return model


def _predict(model, x):
    if keras.backend.backend() == "jax":
        # One jitted function per model, in batches of one shape: an eager
        # call on JAX compiles every op anew for each input shape.
        return np.asarray(
            model.predict(x, batch_size=NUM_SAMPLES, verbose=0), np.float32
        )
    return np.asarray(
        keras.ops.convert_to_numpy(model(x, training=False)), np.float32
    )


def _schedule():
    return kc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)


def _prune_and_fit(model, x, y, eagerly=False, **kwargs):
    pruned = kc.pruning.prune_low_magnitude(
        model, pruning_schedule=_schedule(), **kwargs
    )
    _fit(
        pruned,
        x,
        y,
        callbacks=[kc.pruning.UpdatePruningStep()],
        eagerly=eagerly,
    )
    return kc.pruning.strip_pruning(pruned)


def _check_sparsity(model, at_least):
    sparsity = kc.convert.kernel_sparsity(model)
    assert sparsity >= at_least, f"kernel sparsity {sparsity:.3f}"


def _prunable_units(layer):
    """The layers pruning treats as one unit (a MultiHeadAttention, not its
    projections), inside models and nested models."""
    for sublayer in layer.layers if isinstance(layer, keras.Model) else []:
        if kc.pruning.is_prunable(sublayer):
            yield sublayer
        else:
            yield from _prunable_units(sublayer)


def _check_two_four(model):
    """Every layer whose prunable weights can all take the 2:4 pattern
    (along their input channels, a multiple of 4) has it; there is one."""
    checked = []
    for layer in _prunable_units(model):
        weights = kc.pruning.get_prunable_weights(layer)
        axes = [kc.pruning.input_channel_axis(layer, w) for w in weights]
        if not weights or any(
            len(w.shape) < 2 or w.shape[axis] % 4
            for w, axis in zip(weights, axes)
        ):
            continue  # left dense by whole-model 2:4 pruning
        for weight, axis in zip(weights, axes):
            values = np.moveaxis(keras.ops.convert_to_numpy(weight), axis, -1)
            nonzero = np.count_nonzero(values.reshape(-1, 4), axis=1)
            assert np.all(nonzero <= 2), f"{layer.name}/{weight.name}"
        checked.append(layer.name)
    assert checked, "no layer has the 2:4 pattern"


def _check_clusters(model, at_most):
    rows = kc.clustering.unique_values_report(model)
    assert rows, "no clustered weight"
    too_many = [
        (r["layer"], r["weight"], r["unique_values"])
        for r in rows
        if r["unique_values"] > at_most
    ]
    assert not too_many, too_many


# Techniques: (model, x, y) -> Deployable. `model` must not change.


def prune(model, x, y):
    stripped = _prune_and_fit(model, x, y)
    _check_sparsity(stripped, 0.4)
    return Deployable(stripped)


def two_four(model, x, y):
    # Whole-model 2:4 leaves the layers that cannot take the pattern (a
    # 1-channel first convolution, attention heads) dense, with a warning.
    stripped = _prune_and_fit(model, x, y, sparsity_m_by_n=(2, 4))
    _check_two_four(stripped)
    return Deployable(stripped)


def qat(model, x, y):
    quantized = kc.quantization.quantize_model(model)
    _fit(quantized, x, y)
    assert kc.quantization.is_quantization_aware(quantized)
    return Deployable(quantized, "int8")


def prune_qat(model, x, y):
    stripped = _prune_and_fit(model, x, y, eagerly=True)
    quantized = kc.quantization.quantize_model(stripped, preserve_sparsity=True)
    _fit(quantized, x, y)
    _check_sparsity(quantized, 0.4)  # the zeros survive QAT
    return Deployable(quantized, "int8")


def cluster(model, x, y):
    clustered = kc.clustering.cluster_weights(model, number_of_clusters=4)
    _fit(clustered, x, y)
    stripped = kc.clustering.strip_clustering(clustered)
    _check_clusters(stripped, 4)
    return Deployable(stripped)


def prune_cluster_qat(model, x, y):
    pruned = _prune_and_fit(model, x, y, eagerly=True)
    clustered = kc.clustering.cluster_weights(
        pruned, number_of_clusters=4, preserve_sparsity=True
    )
    _fit(clustered, x, y, eagerly=True)
    stripped = kc.clustering.strip_clustering(clustered)
    _check_clusters(stripped, 5)  # 4 clusters and the pruned zeros
    quantized = kc.quantization.quantize_model(
        stripped, preserve_sparsity=True, preserve_clusters=True
    )
    _fit(quantized, x, y)
    _check_sparsity(quantized, 0.4)
    return Deployable(quantized, "int8")


def channel_prune(model, x, y):
    smaller = kc.pruning.prune_channels(model, 0.5)
    assert smaller.count_params() < model.count_params(), (
        "prune_channels removed nothing; its plan:\n"
        f"{kc.pruning.channel_plan(model, 0.5)}"
    )
    _fit(smaller, x, y, eagerly=True)
    return Deployable(smaller)


def fold_batch_norms(model, x, y):
    folded, report = kc.fusion.fold_batch_norms(model, return_report=True)
    has_batch_norm = any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model._flatten_layers(include_self=False)
    )
    if has_batch_norm:
        assert report.folded and not report.kept, str(report)
    # Folding is for deployment, after training (inference semantics): the
    # folded model computes what the model computes.
    np.testing.assert_allclose(
        _predict(folded, x), _predict(model, x), atol=1e-4
    )
    return Deployable(folded)


def factorize(model, x, y):
    small, report = kc.lowrank.factorize(
        model, rank_ratio=0.5, return_report=True
    )
    assert report.factorized, str(report)
    assert small.count_params() < model.count_params()
    _fit(small, x, y, eagerly=True)
    return Deployable(small)


def distiller(model, x, y):
    student = kc.pruning.prune_low_magnitude(
        model, pruning_schedule=_schedule()
    )
    trainer = kc.distillation.Distiller(student=student, teacher=model)
    # The default recipe: its hint reads the layer feeding each classifier,
    # on every model kind whose intermediate outputs can be read.
    trainer.compile(
        optimizer=keras.optimizers.Adam(1e-3), student_loss_fn=_loss()
    )
    recipe = trainer.recipe
    assert recipe["distillation_loss"] == "CorrelationDistillation"
    if rewrite.is_graph_model(model):
        teacher_side, student_side = recipe["automatic_hint"].split("->")
        assert teacher_side in student_side, recipe
    else:
        assert "subclassed" in recipe["no_automatic_hint"], recipe
    trainer.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[kc.pruning.UpdatePruningStep()],
    )
    stripped = kc.pruning.strip_pruning(trainer.student)
    _check_sparsity(stripped, 0.4)
    return Deployable(stripped)


_COMPRESS_ARGS = dict(
    max_accuracy_drop=0.99,
    epochs=1,
    batch_size=16,
    latency_runs=0,
    verbose=0,
)


def compress(model, x, y):
    # The recipe is built from the budget: sensitivity scan, then pruning
    # while distilling from the original model.
    result = kc.compress(
        model,
        (x, y),
        (x, y),
        target="tflite-float32",
        sparsities=(0.5,),
        loss=_loss(),
        **_COMPRESS_ARGS,
    )
    assert result.budget_met
    # The scan names the user's layers by their paths (nested: "block/x",
    # a layer of a custom block: "ffn/expand").
    scanned = [row.layer for row in result.report.sensitivity.layers]
    assert scanned
    for path in scanned:
        owner = model
        for name in path.split("/"):
            children = {
                child.name: child
                for child in owner._flatten_layers(
                    include_self=False, recursive=False
                )
            }
            owner = children[name]  # raises for a name not the user's
    return Deployable(result.model, "float32", result.content)


def compress_recipe(model, x, y):
    # A given recipe runs as is. QAT to an int8 file: the budget cell above
    # runs the Prune step; measuring after each step converts once more,
    # so one step keeps the cell short.
    recipe = kc.pipeline.Recipe([kc.pipeline.QuantizeAware(epochs=1)])
    result = kc.compress(
        model,
        (x, y),
        (x, y),
        target="tflite-int8",
        recipe=recipe,
        distill=False,  # the budget cell distills
        loss=_loss(),
        **_COMPRESS_ARGS,
    )
    assert [s.stage.split("(")[0] for s in result.report.stages] == ["quantize"]
    assert kc.quantization.is_quantization_aware(result.model)
    return Deployable(result.model, "int8", result.content)


# Kinds whose channels the budget search can remove; the others are
# searched without them, and say why.
_CHANNEL_KINDS = ("sequential", "functional", "nested")


def compress_budget(model, x, y):
    # A size budget on a float32 target: the search's one knob there is
    # channels. Where they cannot go, the report says why and the budget
    # is reported missed, never silently.
    kind = model.name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = kc.compress(
            model,
            (x, y),
            (x, y),
            target="tflite-float32",
            max_bytes=0.9,
            loss=_loss(),
            **_COMPRESS_ARGS,
        )
    report = result.report
    notes = report.search["notes"]
    assert any(n.startswith("bits left out") for n in notes), notes
    if kind in _CHANNEL_KINDS:
        # Every plan removes channels, and its untrained file was measured
        # under the budget (trained biases can add a few hundred bytes to
        # these untrained test models' files: budget_met is not asserted).
        assert all(plan["channels"] for plan in report.search["plans"])
        assert report.search["fits"]
        assert report.final.bytes < report.original.bytes
    else:
        assert any(n.startswith("channels left out") for n in notes), notes
        assert not result.budget_met
        assert not report.budget_checks["bytes"]["held"]
        assert any("Budget NOT met (bytes)" in str(w.message) for w in caught)
    return Deployable(result.model, "float32", result.content)


APPLY = {
    "prune": prune,
    "2:4": two_four,
    "qat": qat,
    "prune_qat": prune_qat,
    "cluster": cluster,
    "prune_cluster_qat": prune_cluster_qat,
    "channel_prune": channel_prune,
    "fold_batch_norms": fold_batch_norms,
    "factorize": factorize,
    "distiller": distiller,
    "compress": compress,
    "compress_recipe": compress_recipe,
    "compress_budget": compress_budget,
}
assert set(APPLY) == set(TECHNIQUES)
assert all(t in TECHNIQUES and k in models.KINDS for k, t in UNSUPPORTED)


# Checks of the converted file.


def _output_step(content):
    """The quantization step of the file's output: the scale of the int8
    output tensor, or of the int8 tensor its final DEQUANTIZE reads."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    output = interpreter.get_output_details()[0]
    scale = output["quantization"][0]
    if scale:
        return float(scale)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():
        if output["index"] in list(op["outputs"]):
            assert op["op_name"] == "DEQUANTIZE", (
                f"the int8 file computes its output in float ({op['op_name']})"
            )
            return float(tensors[int(op["inputs"][0])]["quantization"][0])
    raise AssertionError("no op writes the file's output")


def _check_file(deployable, content, kind, x, y):
    if deployable.mode == "float32":
        report = kc.convert.verify(
            deployable.model, content, x, y, latency_runs=0
        )
        assert report.max_abs_diff <= FLOAT_ATOL, str(report)
        return
    # Judged on 256 inputs (1,024 output values): on 32 inputs, three
    # values a rounding apart would already be 2 % of them.
    probe = models.probe_inputs(kind)
    step = _output_step(content)
    expected = _predict(deployable.model, probe)
    diff = np.abs(kc.convert.run_tflite(content, probe) - expected)
    within_one = float(np.mean(diff <= step * 1.001))
    least = MIN_FRACTION_WITHIN_ONE_STEP_BY_KIND.get(
        kind, MIN_FRACTION_WITHIN_ONE_STEP
    )
    assert within_one >= least, (
        f"only {within_one:.2%} of the int8 file's outputs within one step "
        f"({step:.3g}) of the Keras model's; max diff {diff.max():.3g} "
        f"({diff.max() / step:.1f} steps)"
    )


# The slowest techniques first, so that pytest-xdist's workers finish
# together.
_SLOWEST_FIRST = (
    "compress_recipe",
    "prune_cluster_qat",
    "prune_qat",
    "qat",
    "cluster",
    "compress",
    "distiller",
)


def _cells():
    order = _SLOWEST_FIRST + tuple(
        t for t in TECHNIQUES if t not in _SLOWEST_FIRST
    )
    return [
        pytest.param(kind, technique, id=f"{kind}-{technique}")
        for technique in order
        for kind in models.KINDS
    ]


@pytest.mark.parametrize("kind, technique", _cells())
def test_cell(kind, technique, tmp_path):
    model, x, y = models.build(kind)
    before = [np.array(w, copy=True) for w in model.get_weights()]

    def check_model_unchanged():
        after = model.get_weights()
        assert len(after) == len(before)
        for old, new in zip(before, after):
            np.testing.assert_array_equal(old, new)

    if (kind, technique) in UNSUPPORTED:
        with pytest.raises(ValueError, match=UNSUPPORTED[kind, technique]):
            APPLY[technique](model, x, y)
        check_model_unchanged()
        return

    deployable = APPLY[technique](model, x, y)
    check_model_unchanged()

    # Save and reload without custom_objects.
    expected = _predict(deployable.model, x)
    path = str(tmp_path / "model.keras")
    deployable.model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        _predict(reloaded, x), expected, atol=RELOAD_ATOL
    )

    # Convert and verify the file against the Keras model.
    content = deployable.content
    if content is None:
        options = {}
        if deployable.mode == "int8":
            options["representative_data"] = x
        content = kc.convert.to_tflite(
            deployable.model, deployable.mode, verbose=0, **options
        )
    _check_file(deployable, content, kind, x, y)
