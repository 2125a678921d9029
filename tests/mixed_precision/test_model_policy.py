"""Copies of models under a policy, float32 islands, pruning, conversion."""

import keras
import numpy as np
import pytest

from keras_compress import convert
from keras_compress import mixed_precision
from keras_compress import pruning
from tests import helpers

# bfloat16 keeps 8 significant bits: each cast (inputs, weights, layer
# outputs) has a relative rounding error of at most 2**-8. Three casts per
# weight layer, over the 3 weight layers of the test CNN, bound the error of
# the logits by about 9 * 2**-8 (3.5 %) of their magnitude.
BF16_LOGIT_TOLERANCE = 9 * 2.0**-8


def test_sequential_copy_with_float32_output():
    model, x, _ = helpers.make_model("sequential")
    before = [np.array(w) for w in model.get_weights()]
    mixed = mixed_precision.apply_policy(model, "mixed_bfloat16")
    policies = mixed_precision.get_layer_policies(mixed)
    last = mixed.layers[-1].name
    assert policies.pop(last) == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    assert mixed.dtype_policy.name == "mixed_bfloat16"
    assert mixed_precision.default_float32_layers(model) == [
        model.layers[-1].name
    ]
    # The input model is untouched.
    assert set(mixed_precision.get_layer_policies(model).values()) == {
        "float32"
    }
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Same float32 variables, computation in bfloat16, float32 output.
    for a, b in zip(before, mixed.get_weights()):
        np.testing.assert_array_equal(a, b)
    expected = model.predict(x, verbose=0)
    outputs = mixed(x)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32"
    assert np.max(np.abs(np.array(outputs) - expected)) <= (
        BF16_LOGIT_TOLERANCE * np.max(np.abs(expected))
    )
    assert keras.config.dtype_policy().name == "float32"


def test_selection_of_float32_layers():
    model = helpers.functional_mlp()
    names = mixed_precision.get_layer_policies(
        mixed_precision.apply_policy(
            model, "mixed_bfloat16", float32_layers=["fc1"]
        )
    )
    assert names["fc1"] == "float32" and names["logits"] == "mixed_bfloat16"
    none = mixed_precision.get_layer_policies(
        mixed_precision.apply_policy(model, "mixed_bfloat16", None)
    )
    assert set(none.values()) == {"mixed_bfloat16"}
    by_type = mixed_precision.get_layer_policies(
        mixed_precision.apply_policy(
            model,
            "mixed_float16",
            float32_layers=lambda layer: isinstance(layer, keras.layers.Add),
            layer_policies={"fc2": "float32", "logits": "mixed_bfloat16"},
        )
    )
    assert by_type["add"] == "float32" and by_type["fc2"] == "float32"
    assert by_type["fc1"] == "mixed_float16"
    assert by_type["logits"] == "mixed_bfloat16"


def test_softmax_layers_stay_float32():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, activation="softmax", name="gate")(inputs)
    x = keras.layers.Dense(3, name="proj")(x)
    outputs = keras.layers.Softmax(name="probs")(x)
    model = keras.Model(inputs, outputs)
    assert mixed_precision.default_float32_layers(model) == ["gate", "probs"]
    policies = mixed_precision.get_layer_policies(
        mixed_precision.apply_policy(model, "mixed_float16")
    )
    assert policies == {
        "gate": "float32",
        "proj": "mixed_float16",
        "probs": "float32",
    }


def test_nested_and_subclassed_models():
    model, x, _ = helpers.make_model("nested")
    mixed = mixed_precision.apply_policy(model, "mixed_bfloat16")
    policies = mixed_precision.get_layer_policies(mixed)
    assert policies["inner_sequential/inner_fc"] == "mixed_bfloat16"
    assert policies["middle"] == "mixed_bfloat16"
    assert all(
        policy == "mixed_bfloat16"
        for path, policy in policies.items()
        if path.startswith("sub/")
    )
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        np.array(mixed(x), "float32"),
        expected,
        atol=BF16_LOGIT_TOLERANCE * np.max(np.abs(expected)),
    )

    sub = helpers.subclassed_mlp()
    head = sub.head.layers[0].name
    mixed_sub = mixed_precision.apply_policy(
        sub, "mixed_bfloat16", float32_layers=[head]
    )
    assert isinstance(mixed_sub, helpers.SubclassedMLP)
    assert mixed_sub.hidden.compute_dtype == "bfloat16"
    assert mixed_sub.head.layers[0].compute_dtype == "float32"
    outputs = mixed_sub(x)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32"


def test_bad_arguments():
    model = helpers.functional_mlp()
    with pytest.raises(ValueError, match="Valid policies"):
        mixed_precision.apply_policy(model, "bf16")
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        mixed_precision.apply_policy(model, float32_layers=["nope"])
    with pytest.raises(ValueError, match=r"layer_policies\['fc1'\]"):
        mixed_precision.apply_policy(model, layer_policies={"fc1": "fp8"})
    with pytest.raises(ValueError, match=r"\['missing'\]"):
        mixed_precision.apply_policy(
            model, layer_policies={"missing": "float32"}
        )
    with pytest.raises(ValueError, match="keras.Model"):
        mixed_precision.apply_policy(keras.layers.Dense(2))


def test_bfloat16_model_trains_pruned_and_converts():
    model, x, y = helpers.make_model("sequential")
    mixed = mixed_precision.apply_policy(model, "mixed_bfloat16")
    pruned = pruning.prune_low_magnitude(
        mixed, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=2)
    )
    helpers.compile_for_test(pruned)
    history = pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    stripped = pruning.strip_pruning(pruned)
    assert stripped.layers[0].compute_dtype == "bfloat16"
    kernel = np.array(stripped.layers[0].kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.05)

    # LiteRT has no bfloat16 kernels: the converters take a float32 copy.
    float32_copy = mixed_precision.to_float32(stripped)
    assert set(mixed_precision.get_layer_policies(float32_copy).values()) == {
        "float32"
    }
    content = convert.to_tflite(stripped, "float32")
    outputs = convert.run_tflite(content, x)
    assert outputs.dtype == np.float32
    # The file computes exactly what the float32 copy computes ...
    np.testing.assert_allclose(
        outputs, float32_copy.predict(x, verbose=0), atol=1e-5
    )
    # ... and what the bfloat16 model computes, up to bfloat16 rounding.
    mixed_outputs = stripped.predict(x, verbose=0)
    assert np.max(np.abs(outputs - mixed_outputs)) <= (
        BF16_LOGIT_TOLERANCE * np.max(np.abs(mixed_outputs))
    )
    assert (
        np.mean(np.argmax(outputs, -1) == np.argmax(mixed_outputs, -1)) >= 0.95
    )
    # float16 weights in the file, float32 input and output.
    half = convert.run_tflite(convert.to_tflite(stripped, "float16"), x)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, outputs, atol=1e-2)
    # ONNX likewise.
    onnx_outputs = convert.run_onnx(convert.to_onnx(stripped), x)
    np.testing.assert_allclose(onnx_outputs, outputs, atol=1e-5)


def test_mixed_policy_on_a_pruned_model_keeps_its_masks():
    model, x, y = helpers.make_model("functional")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=1)
    )
    mixed = mixed_precision.apply_policy(pruned, "mixed_bfloat16")
    wrapper = mixed.get_layer("prune_low_magnitude_fc1")
    assert wrapper.layer.compute_dtype == "bfloat16"
    assert (
        mixed.get_layer("prune_low_magnitude_logits").layer.compute_dtype
        == "float32"
    )
    helpers.compile_for_test(mixed)
    mixed.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    kernel = np.array(wrapper.layer.kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.05)
