"""Training-time techniques under mixed precision and under
`keras.distribution`, on the backend this process runs (CI runs this file
on TensorFlow, JAX and PyTorch)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_compress as kc

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(4, name="logits"),
        ]
    )


def _data(n=32):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, 8, 8, 2)).astype("float32"),
        rng.integers(0, 4, size=n),
    )


def _compressed(technique, model):
    if technique == "prune":
        schedule = kc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=1)
        return kc.pruning.prune_low_magnitude(model, pruning_schedule=schedule)
    if technique == "qat":
        return kc.quantization.quantize_model(model)
    return kc.clustering.cluster_weights(model, number_of_clusters=4)


def _deployable(technique, trained):
    if technique == "prune":
        return kc.pruning.strip_pruning(trained)
    if technique == "cluster":
        return kc.clustering.strip_clustering(trained)
    return trained


def _conv_kernel(model):
    """The first convolution's kernel (inside its QAT wrapper, if any)."""
    layer = next(
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Conv2D)
    )
    return keras.ops.convert_to_numpy(layer.kernel)


@pytest.mark.parametrize("technique", ["prune", "qat", "cluster"])
def test_techniques_train_under_mixed_precision(technique):
    x, y = _data()
    mixed = kc.mixed_precision.apply_policy(_model(), "mixed_float16")
    assert mixed.get_layer("conv").compute_dtype == "float16"
    compressed = _compressed(technique, mixed)
    compressed.compile(
        optimizer=kc.mixed_precision.loss_scale_optimizer(
            keras.optimizers.Adam(1e-3)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callbacks = [kc.pruning.UpdatePruningStep()] if technique == "prune" else []
    history = compressed.fit(
        x, y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks
    )
    assert np.all(np.isfinite(history.history["loss"]))
    deployable = _deployable(technique, compressed)
    kernel = _conv_kernel(deployable)
    if technique == "prune":
        assert np.mean(kernel == 0) >= 0.45
    if technique == "cluster":
        assert len(np.unique(kernel)) <= 4
    # The file computes in float32 what the model computes in float16.
    mode = "int8" if technique == "qat" else "float32"
    content = kc.convert.to_tflite(deployable, mode, verbose=0)
    expected = keras.ops.convert_to_numpy(deployable(x, training=False))
    actual = kc.convert.run_tflite(content, x)
    scale = float(np.abs(expected).max())
    tolerance = 0.05 if technique == "qat" else 0.01
    np.testing.assert_allclose(actual, expected, atol=tolerance * scale)


def test_per_layer_precision_reaches_the_file_from_every_backend():
    # On JAX and PyTorch the conversion runs in a TensorFlow worker; the
    # precision map travels with it and the file records the layers.
    x, _ = _data()
    model = _model()
    content = kc.convert.to_tflite(
        model, "int8", representative_data=x, precision={"conv": "w4a8"}
    )
    stored = {t.layer: t.dtype for t in kc.convert.weight_tensors(content)}
    assert stored["conv"] == "int4"
    assert set(stored.values()) == {"int4", "int8"}
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = kc.convert.run_tflite(content, x)
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) >= 0.8


def test_jax_data_parallel_trains_every_technique():
    # A fresh JAX process with two virtual CPU devices: XLA_FLAGS must be
    # set before JAX starts, whatever backend this test process runs.
    environment = {**os.environ, "PYTHONPATH": REPOSITORY}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.core.data_parallel_worker"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [
        line
        for line in completed.stdout.splitlines()
        if line.startswith("RESULTS ")
    ]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULTS ") :])
    assert results["devices"] == 2
    for technique in ("prune", "qat", "cluster"):
        figures = results[technique]
        assert np.all(np.isfinite(figures["loss"])), figures
        # Replicated on both devices, as DataParallel lays variables out.
        assert figures["kernel_devices"] == 2, figures
    assert results["prune"]["zeros"] >= 0.45
    assert results["cluster"]["unique"] <= 4
