"""profile / compare_profiles: per-layer parameters and FLOPs."""

import json

import keras
import numpy as np
import pytest

from keras_compress import analysis
from keras_compress.pruning import structured
from tests import helpers

L = keras.layers


def _conv_dense():
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(4, 3, name="conv"),  # -> 8x8x4
            L.BatchNormalization(name="bn"),
            L.MaxPooling2D(name="pool"),  # -> 4x4x4
            L.Flatten(name="flat"),
            L.Dense(5, name="fc"),
        ],
        name="conv_dense",
    )


def test_counts_match_the_formulas():
    report = analysis.profile(_conv_dense())
    rows = {row.name: row for row in report.layers}
    assert rows["conv"].params == 3 * 3 * 3 * 4 + 4
    assert rows["conv"].flops == 2 * (8 * 8) * (3 * 3 * 3 * 4)
    assert rows["bn"].params == 4 * 4
    assert rows["bn"].flops == 2 * 8 * 8 * 4
    assert rows["pool"].flops == 0 and rows["pool"].params == 0
    assert rows["fc"].params == 64 * 5 + 5
    assert rows["fc"].flops == 2 * 64 * 5
    assert rows["conv"].class_name == "Conv2D"
    assert report.total_params == _conv_dense().count_params()
    assert report.total_flops == sum(row.flops for row in report.layers)


def test_depthwise_separable_transpose_and_einsum_formulas():
    inputs = keras.Input((6, 6, 4))
    x = L.DepthwiseConv2D(3, name="dw")(inputs)  # -> 4x4x4
    x = L.SeparableConv2D(8, 3, name="sep")(x)  # -> 2x2x8
    x = L.Conv2DTranspose(2, 3, name="up")(x)  # 2x2 in -> 4x4x2
    x = L.Reshape((16, 2))(x)
    x = L.EinsumDense("abc,cd->abd", (16, 3), name="einsum")(x)
    model = keras.Model(inputs, x)
    rows = {row.name: row for row in analysis.profile(model).layers}
    assert rows["dw"].flops == 2 * 16 * (3 * 3 * 4)
    assert rows["sep"].flops == 2 * 4 * (3 * 3 * 4 + 4 * 8)
    assert rows["up"].flops == 2 * 4 * (3 * 3 * 2 * 8)
    assert rows["einsum"].flops == 2 * 16 * 2 * 3
    assert rows["reshape"].flops == 0


@pytest.mark.parametrize("kind", sorted(helpers.MODEL_KINDS))
def test_every_kind_of_model(kind):
    model, _, _ = helpers.make_model(kind)
    report = analysis.profile(model)
    assert report.total_params == model.count_params()
    dense_macs = sum(
        int(np.prod(layer.kernel.shape))
        for layer in model._flatten_layers()
        if isinstance(layer, L.Dense)
    )
    if kind != "sequential":  # MLPs: every FLOP is a Dense kernel's.
        assert report.total_flops == 2 * dense_macs
    else:
        assert report.total_flops > 2 * dense_macs
    if kind == "nested":
        assert any("/" in row.name for row in report.layers)


def test_shared_layer_is_counted_per_call():
    dense = L.Dense(4, name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, dense(dense(inputs)))
    (row,) = analysis.profile(model).layers
    assert row.params == 20
    assert row.flops == 2 * 2 * 16


def test_model_is_left_as_it_was():
    model = _conv_dense()
    analysis.profile(model)
    layer = model.get_layer("conv")
    assert "call" not in vars(layer)
    x = np.ones((1, 10, 10, 3), "float32")
    np.testing.assert_allclose(model(x), model.predict(x, verbose=0), atol=1e-5)


def test_as_dict_str_and_compare():
    model = _conv_dense()
    before = analysis.profile(model)
    small = structured.prune_channels(model, 0.5)
    after = analysis.profile(small)
    assert after.total_params < before.total_params
    assert after.total_flops < before.total_flops
    data = json.loads(json.dumps(before.as_dict()))
    assert data["total_flops"] == before.total_flops
    assert len(data["layers"]) == len(before.layers)
    text = str(before)
    assert "conv" in text and f"{before.total_flops:,}" in text
    table = analysis.compare_profiles(before, after)
    ratio = after.total_params / before.total_params
    assert f"{ratio:.2f}x" in table
    conv_ratio = after.layers[0].flops / before.layers[0].flops
    assert f"{conv_ratio:.2f}x" in table.splitlines()[2]


def test_unknown_input_shape_is_a_clear_error():
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, L.Dense(2)(inputs))
    with pytest.raises(ValueError, match="fixed input shapes"):
        analysis.profile(model)
    unbuilt = helpers.SubclassedMLP()
    with pytest.raises(ValueError, match="not\\s+been built"):
        analysis.profile(unbuilt)
