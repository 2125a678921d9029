"""Shared test setup and small models of every kind.

TensorFlow is given two logical CPU devices before anything else runs, so
that `tf.distribute.MirroredStrategy` tests have two replicas on one CPU.
"""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if os.environ["KERAS_BACKEND"] == "jax":
    # Tests run tiny programs once: XLA's optimizations cost more compile
    # time than they save (a third of the JAX conformance matrix's time).
    os.environ.setdefault(
        "XLA_FLAGS",
        "--xla_backend_optimization_level=0 "
        "--xla_llvm_disable_expensive_passes=true",
    )

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() == "jax":
    import jax

    # Small models on JAX spend most of their test time compiling small XLA
    # programs (eager ops, train steps); the persistent cache shares them
    # between pytest-xdist workers and later runs.
    jax.config.update(
        "jax_compilation_cache_dir",
        os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "jax"),
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)


def pytest_collection_finish(session):
    # What the collection imported (TensorFlow, Keras, the tests' modules)
    # lives as long as the process: out of the garbage collector's way, its
    # full passes stop walking those objects again after every few tests.
    gc.freeze()


@pytest.fixture(autouse=True)
def _seed():
    # A fresh session before each test too, so that the default layer
    # names a test sees ("dense") never depend on which tests its worker
    # ran before it.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield
    # Without Keras's full garbage collection (`free_memory`): it walked
    # TensorFlow's whole heap after every test, about a second each, a third
    # of the suite's time. Python's own collector still frees the cycles.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def strategy():
    """A MirroredStrategy over the two logical CPUs, shared by all tests.

    One per process: two MirroredStrategy objects on the same devices share
    collective-op keys and abort each other's all-reduces.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    return tf.distribute.MirroredStrategy(devices)
