"""The converted file keeps the clusters (and the zeros), and computes
what Keras computes."""

import keras
import numpy as np

from keras_compress import clustering
from keras_compress import convert
from keras_compress import pruning
from keras_compress import quantization
from tests import helpers
from tests.quantization import litert_checks

N = 4


def _in_file_layout(kernel):
    """A Keras kernel in LiteRT's layout (output channels first)."""
    if kernel.ndim == 4:  # Conv2D HWIO -> OHWI
        return kernel.transpose(3, 0, 1, 2)
    return kernel.T  # Dense (in, out) -> (out, in)


def test_float32_file_keeps_the_clusters():
    model, x, y = helpers.make_model("sequential")
    clustered = clustering.cluster_weights(model, N)
    helpers.compile_for_test(clustered)
    clustered.fit(x, y, epochs=1, verbose=0)
    stripped = clustering.strip_clustering(clustered)
    content = convert.to_tflite(stripped, "float32")
    weights = litert_checks.weight_tensors(
        content, "CONV_2D"
    ) + litert_checks.weight_tensors(content, "FULLY_CONNECTED")
    assert len(weights) == 3
    for values, _ in weights:
        assert np.unique(values).size <= N
    np.testing.assert_allclose(
        convert.run_tflite(content, x),
        keras.ops.convert_to_numpy(stripped(x)),
        atol=1e-5,
    )


def test_prune_cluster_qat_int8_pipeline():
    model, x, y = helpers.make_model("sequential")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=1)
    )
    helpers.compile_for_test(pruned)
    pruned.fit(
        x, y, epochs=1, verbose=0, callbacks=[pruning.UpdatePruningStep()]
    )
    clustered = clustering.cluster_weights(
        pruning.strip_pruning(pruned), N, preserve_sparsity=True
    )
    helpers.compile_for_test(clustered)
    clustered.fit(x, y, epochs=1, verbose=0)
    qat = quantization.quantize_model(
        clustering.strip_clustering(clustered),
        preserve_sparsity=True,
        preserve_clusters=True,
    )
    helpers.compile_for_test(qat)
    qat.fit(x, y, epochs=2, verbose=0)
    kernels = [
        layer.quantized_weights[0].numpy()
        for layer in qat.layers
        if isinstance(layer, quantization.QuantizeWrapper)
    ]
    content = convert.to_tflite(
        qat, "int8", representative_data=x, sparse=False
    )
    weights = litert_checks.weight_tensors(
        content, "CONV_2D"
    ) + litert_checks.weight_tensors(content, "FULLY_CONNECTED")
    assert len(weights) == len(kernels) == 3
    for kernel, (values, _) in zip(kernels, weights):
        assert values.dtype == np.int8
        zeros = _in_file_layout(kernel) == 0
        assert zeros.mean() >= 0.45
        assert np.all(values[zeros] == 0)  # pruned zeros are still zeros
        for channel in values.reshape(values.shape[0], -1):
            assert np.unique(channel[channel != 0]).size <= N
    litert_checks.check_matches_keras(
        keras.ops.convert_to_numpy(qat(x)),
        convert.run_tflite(content, x),
        litert_checks.output_step(content),
    )
