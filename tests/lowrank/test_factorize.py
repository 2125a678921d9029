"""Low-rank factorization: exactness, predicted error, rank choice, files."""

import os

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress import lowrank
from tests import helpers

L = keras.layers


def _data(shape, n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32")


def _kernel_with_singular_values(m, n, singular_values, seed=0):
    """An `(m, n)` matrix whose singular values are `singular_values`."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(m, m)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    k = len(singular_values)
    return (u[:, :k] * singular_values) @ v[:, :k].T


def _cnn():
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            L.Conv2D(24, 3, dilation_rate=2, name="dilated"),
            L.Flatten(),
            L.Dense(32, activation="relu", name="hidden"),
            L.Dense(5, name="logits"),
        ]
    )


def _reconstructed_kernel(block):
    """The kernel `down @ up` of a factorized block, as a matrix."""
    down, up = (layer.kernel.numpy() for layer in block.layers)
    return down.reshape(-1, down.shape[-1]) @ up.reshape(-1, up.shape[-1])


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Dense(6, activation="tanh"), (9,)),
        (lambda: L.Dense(12), (4, 5)),  # rank-3 input
        (lambda: L.Conv2D(5, 3, strides=2, padding="same"), (9, 9, 2)),
        (
            lambda: L.Conv2D(4, (3, 2), dilation_rate=2, use_bias=False),
            (9, 9, 2),
        ),
    ],
)
def test_full_rank_factorization_is_exact(make, shape):
    layer = make()
    x = _data(shape)
    expected = np.asarray(layer(x))
    full_rank = min(
        int(np.prod(layer.kernel.shape[:-1])), layer.kernel.shape[-1]
    )

    block = lowrank.factorize_layer(layer, full_rank)

    assert [type(inner) for inner in block.layers] == [type(layer)] * 2
    assert block.name == layer.name
    np.testing.assert_allclose(np.asarray(block(x)), expected, atol=1e-5)


def test_rank_deficient_kernel_is_exact_at_its_rank_and_smaller():
    inputs = keras.Input((24,))
    outputs = L.Dense(20, name="fc")(inputs)
    model = keras.Model(inputs, outputs)
    kernel = _kernel_with_singular_values(24, 20, [3.0, 2.0, 1.0])
    model.get_layer("fc").kernel.assign(kernel)
    x = _data((24,))

    small, report = lowrank.factorize(model, energy=1.0, return_report=True)

    (row,) = report.rows
    assert row.factorized and row.rank == 3 and row.full_rank == 20
    assert row.params_after == 3 * (24 + 20) + 20 < row.params_before
    assert row.kept_energy == pytest.approx(1.0)
    assert row.predicted_error == pytest.approx(0.0, abs=1e-6)
    assert small.count_params() == row.params_after
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


def test_reduced_rank_error_is_the_predicted_one():
    model = _cnn()
    kernels = {
        name: model.get_layer(name).kernel.numpy()
        for name in ("dilated", "hidden")
    }

    small, report = lowrank.factorize(
        model, rank_ratio=0.5, layers=["dilated", "hidden"], return_report=True
    )

    rows = {row.layer: row for row in report.rows}
    for name, kernel in kernels.items():
        row = rows[name]
        matrix = kernel.reshape(-1, kernel.shape[-1]).astype("float64")
        assert row.matrix_shape == matrix.shape
        assert row.rank == int(np.ceil(0.5 * min(matrix.shape)))
        # The prediction from the dropped singular values...
        s = np.linalg.svd(matrix, compute_uv=False)
        dropped = np.sqrt(np.sum(s[row.rank :] ** 2) / np.sum(s**2))
        assert row.predicted_error == pytest.approx(dropped, rel=1e-6)
        assert 0.05 < row.predicted_error < 1
        # ...is the error of the kernel the two new layers compute.
        rebuilt = _reconstructed_kernel(small.get_layer(name))
        error = np.linalg.norm(rebuilt - matrix) / np.linalg.norm(matrix)
        assert error == pytest.approx(row.predicted_error, rel=1e-4)
    # Biases and activations moved to the second layer.
    hidden = small.get_layer("hidden")
    assert hidden.layers[0].activation is keras.activations.linear
    assert not hidden.layers[0].use_bias
    assert hidden.layers[1].activation is keras.activations.relu
    np.testing.assert_array_equal(
        hidden.layers[1].bias.numpy(), model.get_layer("hidden").bias.numpy()
    )
    # Layers not named are kept as they were.
    assert type(small.layers[0]) is L.Conv2D
    assert type(small.get_layer("logits")) is L.Dense


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99])
def test_energy_picks_the_smallest_rank_keeping_it(energy):
    singular_values = 0.8 ** np.arange(16)
    inputs = keras.Input((32,))
    outputs = L.Dense(16, name="fc")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("fc").kernel.assign(
        _kernel_with_singular_values(32, 16, singular_values)
    )

    _, report = lowrank.factorize(model, energy=energy, return_report=True)

    (row,) = report.rows
    fractions = np.cumsum(singular_values**2) / np.sum(singular_values**2)
    assert fractions[row.rank - 1] >= energy
    assert row.rank == 1 or fractions[row.rank - 2] < energy
    assert row.kept_energy == pytest.approx(fractions[row.rank - 1])


def test_layers_that_would_not_shrink_are_skipped():
    model = helpers.functional_mlp()  # Dense 16->16, 16->16, 16->3

    small, report = lowrank.factorize(
        model, rank_ratio=0.75, return_report=True
    )

    # rank 12 of 16: 12 * 32 = 384 >= 256; rank 3 of 3: 3 * 19 >= 48.
    assert not report.factorized
    assert {row.layer for row in report.skipped} == {"fc1", "fc2", "logits"}
    assert all("would not reduce" in row.reason for row in report.skipped)
    assert report.params_after == report.params_before
    assert all(type(layer) is not keras.Sequential for layer in small.layers)
    x = _data((16,))
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )

    _, report = lowrank.factorize(model, rank=4, return_report=True)
    assert [row.layer for row in report.factorized] == ["fc1", "fc2"]
    assert [row.layer for row in report.skipped] == ["logits"]


def test_a_factorization_that_changes_nothing_warns():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    with pytest.warns(UserWarning, match="replaced no layer.*lower `rank`"):
        same = lowrank.factorize(model, rank=1000)
    assert len(same.layers) == 1


def test_nested_layers_by_path_and_original_unchanged():
    model = helpers.nested_model()
    weights = [w.copy() for w in model.get_weights()]
    x = _data((16,))

    small, report = lowrank.factorize(
        model, rank=2, layers=["inner_sequential/inner_fc"], return_report=True
    )

    assert [row.layer for row in report.factorized] == [
        "inner_sequential/inner_fc"
    ]
    inner = small.get_layer("inner_sequential").get_layer("inner_fc")
    assert [layer.name for layer in inner.layers] == [
        "inner_fc_down",
        "inner_fc_up",
    ]
    assert small.predict(x, verbose=0).shape == (8, 3)
    assert type(model.get_layer("inner_sequential").layers[0]) is L.Dense
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_litert_file_matches_and_keras_file_reloads(tmp_path):
    model = _cnn()
    x = _data((12, 12, 3), n=16)
    small, report = lowrank.factorize(
        model, rank_ratio=0.25, return_report=True
    )
    assert len(report.factorized) == 4
    expected = small.predict(x, verbose=0)

    blob = kc.convert.to_tflite(small, "float32")
    np.testing.assert_allclose(
        kc.convert.run_tflite(blob, x), expected, rtol=1e-5, atol=1e-5
    )
    ops = [op.op_name for op in kc.convert.op_details(blob)]
    assert ops.count("CONV_2D") == 4 and ops.count("FULLY_CONNECTED") == 4

    path = os.path.join(tmp_path, "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)  # stock layers: no custom_objects
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), expected, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"rank_ratio": 0.0},
            r"`rank_ratio` must be a number in \(0, 1\], got 0.0",
        ),
        ({"rank_ratio": 1.5}, "`rank_ratio` must be"),
        ({"energy": 0}, r"`energy` must be a number in \(0, 1\], got 0"),
        ({"energy": 1.01}, "`energy` must be"),
        ({"rank": 0}, "`rank` must be a positive int, got 0"),
        ({"rank": 2.5}, "`rank` must be a positive int"),
        ({"rank_ratio": 0.5, "energy": 0.9}, "exactly one of.*rank_ratio=0.5"),
        ({}, "exactly one of.*got none"),
        ({"rank": 2, "layers": ["nope"]}, "No layer named 'nope'.*fc1, fc2"),
        (
            {"rank": 2, "layers": ["add"]},
            "'add' cannot be factorized: it is an? Add.*Supported",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lowrank.factorize(helpers.functional_mlp(), **kwargs)


def test_unsupported_layer_named_explicitly():
    model = keras.Sequential(
        [keras.Input((9, 9, 4)), L.DepthwiseConv2D(3, name="dw"), L.Flatten()]
    )
    with pytest.raises(
        ValueError, match="'dw' cannot be factorized.*Dense.*Conv2D"
    ):
        lowrank.factorize(model, rank=1, layers=["dw"])
    with pytest.raises(ValueError, match="'dw' cannot be factorized"):
        lowrank.factorize_layer(model.get_layer("dw"), 1)
    with pytest.raises(
        ValueError, match="`rank` for layer 'fc1' must be an int from 1 to 16"
    ):
        lowrank.factorize_layer(helpers.functional_mlp().get_layer("fc1"), 17)


def test_subclassed_models_and_bad_layer_lists():
    with pytest.raises(ValueError, match="subclassed SubclassedMLP"):
        lowrank.factorize(helpers.subclassed_mlp(), rank=2)
    nested = helpers.nested_model()
    hidden = nested.get_layer("sub").hidden.name
    for name in (hidden, f"sub/{hidden}"):
        with pytest.raises(ValueError, match="inside 'sub' \\(a subclassed"):
            lowrank.factorize(nested, rank=2, layers=[name])
    # Nothing it can replace: an error naming where the kernels are.
    sub = helpers.subclassed_mlp()
    inputs = keras.Input(sub.get_build_config()["input_shape"][1:])
    only_subclassed = keras.Model(inputs, sub(inputs))
    with pytest.raises(
        ValueError, match=r"found no Dense.*inside \['subclassed_mlp"
    ):
        lowrank.factorize(only_subclassed, rank=2)
    with pytest.raises(TypeError, match="list of layer names"):
        lowrank.factorize(nested, rank=2, layers="middle")


def test_original_model_survives_training_the_factorized_copy():
    # On JAX a bias shared by reference was donated (deleted) by the
    # copy's jit train step; CI runs this test on JAX and torch too.
    inputs = keras.Input((32,))
    outputs = keras.layers.Dense(4)(keras.layers.Dense(32)(inputs))
    model = keras.Model(inputs, outputs)
    before = [w.copy() for w in model.get_weights()]
    factorized = kc.lowrank.factorize(model, rank=2)
    factorized.compile("adam", "mse")
    factorized.fit(
        np.ones((32, 32), "float32"), np.ones((32, 4), "float32"), verbose=0
    )
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
