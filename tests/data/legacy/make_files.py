"""Writes the `.keras` files that `tests/core/test_legacy_files.py` loads.

Run once at commit 296d487 (before the compression core), so that the test
proves that files written by that release keep loading:

    PYTHONPATH=. python tests/data/legacy/make_files.py

Each file comes with `<name>.npz`: an input batch and the outputs the saved
model gave for it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
from tests import helpers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _train(model, x, y, callbacks=()):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=callbacks)
    return model


def main():
    keras.utils.set_random_seed(0)
    schedule = kc.pruning.ConstantSparsity(0.5, 0, frequency=1)
    step = [kc.pruning.UpdatePruningStep()]
    for kind in ("functional", "subclassed"):
        base, x, y = helpers.make_model(kind)
        models = {
            f"pruned_{kind}": (
                kc.pruning.prune_low_magnitude(base, schedule),
                step,
            ),
            f"quantized_{kind}": (kc.quantization.quantize_model(base), ()),
            f"clustered_{kind}": (
                kc.clustering.cluster_weights(base, number_of_clusters=4),
                (),
            ),
        }
        for name, (model, callbacks) in models.items():
            _train(model, x, y, callbacks)
            model.save(os.path.join(HERE, f"{name}.keras"))
            np.savez(
                os.path.join(HERE, f"{name}.npz"),
                x=x[:8],
                outputs=keras.ops.convert_to_numpy(model(x[:8])),
            )


if __name__ == "__main__":
    main()
