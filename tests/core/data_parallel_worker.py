"""Trains prune/QAT/cluster under `keras.distribution.DataParallel` on two
virtual JAX CPU devices and prints the figures `test_backends` checks.

Run as `python -m tests.core.data_parallel_worker` from the repository:
XLA_FLAGS must be set before JAX starts, so this is its own process.
"""

import json
import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    "--xla_force_host_platform_device_count=2 "
    "--xla_backend_optimization_level=0"
)

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_compress as kc  # noqa: E402
from tests.core import test_backends  # noqa: E402


def main():
    devices = jax.devices("cpu")
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    x, y = test_backends._data(64)
    results = {"devices": len(devices)}
    for technique in ("prune", "qat", "cluster"):
        keras.utils.set_random_seed(0)
        model = test_backends._compressed(technique, test_backends._model())
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        callbacks = []
        if technique == "prune":
            callbacks.append(kc.pruning.UpdatePruningStep())
        history = model.fit(
            x, y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks
        )
        kernel = next(
            v for v in model.trainable_variables if v.path.endswith("kernel")
        )
        values = test_backends._conv_kernel(
            test_backends._deployable(technique, model)
        )
        results[technique] = {
            "loss": [float(v) for v in history.history["loss"]],
            "kernel_devices": len(kernel.value.sharding.device_set),
            "zeros": float(np.mean(values == 0)),
            "unique": int(len(np.unique(values))),
        }
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
