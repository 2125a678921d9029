"""`.keras` save and load of QAT models, without custom_objects."""

import keras
import numpy as np
import pytest

from keras_compress import quantization as q
from tests import helpers
from tests.quantization import litert_checks
from tests.quantization.test_quantize_api import residual_depthwise_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras.utils.set_random_seed(0)
    x, y = litert_checks.toy_images((16, 16, 3), 4, 64, seed=0)
    qat = q.quantize_model(residual_depthwise_model())
    litert_checks.compile_and_fit(qat, x, y)
    path = tmp_path_factory.mktemp("qat") / "qat.keras"
    qat.save(path)
    return qat, x, y, path


def test_loads_without_custom_objects_and_computes_the_same(saved):
    qat, x, _, path = saved
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        litert_checks.predict(loaded, x), litert_checks.predict(qat, x)
    )
    assert q.observer_ranges(loaded) == q.observer_ranges(qat)
    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in qat.layers
    ]
    original = qat.get_layer("quant_conv2d")
    restored = loaded.get_layer("quant_conv2d")
    assert restored.batch_norm is not None
    assert restored.activation is original.activation
    np.testing.assert_array_equal(
        restored.batch_norm.moving_variance.numpy(),
        original.batch_norm.moving_variance.numpy(),
    )
    # The Concatenate shares its producer's range again after loading.
    concat = loaded.get_layer("quant_concatenate")
    relu = loaded.get_layer("quant_re_lu_2")
    shared = concat._range_source.spec[1]["min"]
    assert shared is relu._output_specs[0][1]["min"]


def test_training_resumes_after_loading(saved):
    _, x, y, path = saved
    loaded = keras.saving.load_model(path)
    before = q.observer_ranges(loaded)
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert q.observer_ranges(loaded) != before


def test_sparsity_masks_and_schemes_survive_saving(tmp_path):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    kernel = model.layers[1].kernel
    kernel.assign(kernel.numpy() * (np.arange(64).reshape(8, 8) % 2))
    qat = q.quantize_model(model, scheme="experimental_4bit_weights")
    assert qat.get_layer("quant_dense").preserve_sparsity
    path = tmp_path / "sparse.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    wrapper = loaded.get_layer("quant_dense")
    assert wrapper.scheme.weight_bits == 4
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = np.random.default_rng(1).integers(0, 2, 64)
    litert_checks.compile_and_fit(loaded, x, y, learning_rate=1e-2)
    trained = wrapper.layer.kernel.numpy()
    assert np.all(trained[:, ::2] == 0)  # the zeros of the saved model


def test_subclassed_qat_model_round_trips(tmp_path):
    model, x, y = helpers.make_model("subclassed")
    qat = q.quantize_model(model)
    litert_checks.observe(qat, x)
    path = tmp_path / "subclassed.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, q.QuantizedModel)
    np.testing.assert_array_equal(
        litert_checks.predict(loaded, x), litert_checks.predict(qat, x)
    )
    # Layer names are re-generated on load; the ranges are the same.
    assert sorted(q.observer_ranges(loaded).values()) == sorted(
        q.observer_ranges(qat).values()
    )
