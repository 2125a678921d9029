"""A pruned, stripped model converts to LiteRT and computes the same."""

import numpy as np
import pytest

from keras_compress import convert
from keras_compress import pruning
from tests import helpers


def _pruned_and_stripped(kind, schedule, **prune_kwargs):
    model, x, y = helpers.make_model(kind)
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=schedule, **prune_kwargs
    )
    helpers.compile_for_test(pruned)
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    return pruning.strip_pruning(pruned), x


@pytest.mark.parametrize("kind", sorted(helpers.MODEL_KINDS))
def test_stripped_model_converts_with_equal_outputs(kind):
    stripped, x = _pruned_and_stripped(
        kind, pruning.ConstantSparsity(0.8, begin_step=0, frequency=1)
    )
    expected = stripped.predict(x, verbose=0)
    for sparse in (False, True):
        content = convert.to_tflite(stripped, sparse=sparse)
        outputs = convert.run_tflite(content, x)
        assert np.max(np.abs(outputs - expected)) < 1e-5, f"sparse={sparse}"


def test_sparse_encoding_makes_the_file_smaller():
    stripped, x = _pruned_and_stripped(
        "sequential", pruning.ConstantSparsity(0.8, begin_step=0, frequency=1)
    )
    dense = convert.to_tflite(stripped, sparse=False)
    sparse = convert.to_tflite(stripped, sparse=True)
    # 80 % of the kernels are zeros; the sparse format stores non-zeros and
    # their indices only, so the file must shrink well below the dense one.
    assert len(sparse) < 0.6 * len(dense)
    np.testing.assert_allclose(
        convert.run_tflite(sparse, x), convert.run_tflite(dense, x), atol=1e-5
    )


def test_two_four_sparsity_survives_conversion():
    stripped, x = _pruned_and_stripped(
        "functional",
        pruning.ConstantSparsity(0.5, begin_step=0, frequency=1),
        sparsity_m_by_n=(2, 4),
    )
    for layer in stripped.layers:
        if hasattr(layer, "kernel"):
            groups = np.asarray(layer.kernel).reshape(
                -1, 4, layer.kernel.shape[-1]
            )
            assert np.all(np.count_nonzero(groups, axis=1) <= 2), layer.name
    content = convert.to_tflite(stripped)
    np.testing.assert_allclose(
        convert.run_tflite(content, x),
        stripped.predict(x, verbose=0),
        atol=1e-5,
    )
