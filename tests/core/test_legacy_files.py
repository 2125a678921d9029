"""`.keras` files written before the compression core keep loading.

The files in tests/data/legacy were written at commit 296d487 by
`tests/data/legacy/make_files.py`, with the outputs the models gave.
"""

import os

import keras
import numpy as np
import pytest

import keras_compress as kc
from tests import helpers  # noqa: F401  (registers SubclassedMLP)

LEGACY = os.path.join(os.path.dirname(__file__), "..", "data", "legacy")
NAMES = [
    f"{technique}_{kind}"
    for technique in ("pruned", "quantized", "clustered")
    for kind in ("functional", "subclassed")
]


@pytest.mark.parametrize("name", NAMES)
def test_legacy_file_loads_with_same_outputs(name):
    model = keras.saving.load_model(os.path.join(LEGACY, f"{name}.keras"))
    stored = np.load(os.path.join(LEGACY, f"{name}.npz"))
    outputs = keras.ops.convert_to_numpy(model(stored["x"]))
    np.testing.assert_allclose(outputs, stored["outputs"], atol=1e-5)


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_legacy_pruned_file_keeps_masks_and_step(kind):
    model = keras.saving.load_model(
        os.path.join(LEGACY, f"pruned_{kind}.keras")
    )
    pruners = kc.pruning.get_pruners(model)
    assert pruners
    for pruner in pruners:
        assert int(keras.ops.convert_to_numpy(pruner.step)) > 0
        for weight, mask in zip(pruner.weights, pruner.masks):
            mask = keras.ops.convert_to_numpy(mask)
            assert 0 < mask.mean() < 1
            # Masked weights are exactly zero in the restored variables.
            assert np.all(keras.ops.convert_to_numpy(weight)[mask == 0] == 0)
