"""`quantize_model`/`quantize_apply` on every kind of model, checked on the
converted LiteRT file."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_compress import convert
from keras_compress import pruning
from keras_compress import quantization as q
from keras_compress.convert import to_tflite
from keras_compress.demo import reference_cnn
from keras_compress.quantization import schemes
from tests import helpers
from tests.quantization import litert_checks

L = keras.layers
IMAGE_SHAPE = (14, 14, 1)


@pytest.fixture(scope="module")
def reference():
    """The reference CNN trained briefly, then 1 epoch of QAT."""
    keras.utils.set_random_seed(0)
    x, y = litert_checks.toy_images(IMAGE_SHAPE, 4, 512, seed=0)
    model = litert_checks.compile_and_fit(
        reference_cnn(IMAGE_SHAPE, 4), x, y, epochs=2
    )
    weights = [w.copy() for w in model.get_weights()]
    qat = q.quantize_model(model)
    litert_checks.compile_and_fit(qat, x, y, learning_rate=1e-4)
    content = litert_checks.convert_qat(qat)
    return model, weights, qat, x, y, content


def test_reference_cnn_is_integer_end_to_end(reference):
    content = reference[-1]
    litert_checks.check_integer_end_to_end(content)
    names = [op.name for op in litert_checks.ops_of(content)]
    assert names.count("CONV_2D") == 2
    assert names.count("FULLY_CONNECTED") == 2
    assert names.count("MAX_POOL_2D") == 2


def test_reference_cnn_file_matches_keras(reference):
    _, _, qat, x, y, content = reference
    keras_out = litert_checks.predict(qat, x)
    file_out = litert_checks.run(content, x)
    litert_checks.check_matches_keras(
        keras_out, file_out, litert_checks.output_step(content)
    )
    agreement = np.mean(keras_out.argmax(1) == file_out.argmax(1))
    assert agreement >= 0.99


def test_int8_io_file_matches_keras(reference):
    _, _, qat, x, _, _ = reference
    content = litert_checks.convert_qat(qat, int8_io=True)
    names = [op.name for op in litert_checks.ops_of(content)]
    assert "QUANTIZE" not in names and "DEQUANTIZE" not in names
    assert litert_checks.float_ops_inside(content) == []
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )


def test_to_tflite_int8_with_calibration_data_keeps_it_integer(reference):
    # Today's `to_tflite(..., "int8")` still requires calibration data; with
    # it, a QAT model converts to the same integer graph.
    _, _, qat, x, _, content = reference
    blob = to_tflite(qat, "int8", representative_data=x[:32])
    litert_checks.check_integer_end_to_end(blob)
    assert [op.name for op in litert_checks.ops_of(blob)] == [
        op.name for op in litert_checks.ops_of(content)
    ]


def test_user_model_is_unchanged(reference):
    model, weights, qat, *_ = reference
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not any(
        isinstance(layer, q.QuantizeWrapper) for layer in model.layers
    )
    assert model.layers[0].activation is keras.activations.relu
    assert qat.layers[1].layer is not model.layers[0]


def test_qat_keeps_the_float_accuracy(reference):
    model, _, qat, x, y, content = reference
    float_accuracy = np.mean(litert_checks.predict(model, x).argmax(1) == y)
    file_accuracy = np.mean(litert_checks.run(content, x).argmax(1) == y)
    assert file_accuracy >= float_accuracy - 0.02


def residual_depthwise_model():
    """A small mobile-style network with every graph pattern we handle."""
    inputs = keras.Input((16, 16, 3))
    x = L.ZeroPadding2D(1)(inputs)
    x = L.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.Conv2D(8, 1, use_bias=False)(y)
    y = L.BatchNormalization()(y)
    x = L.Add()([x, y])
    x = L.ReLU()(x)
    a = L.Conv2D(4, 1, activation="relu")(x)
    b = L.SeparableConv2D(4, 3, padding="same", activation="relu")(x)
    c = L.MaxPooling2D(3, strides=1, padding="same")(x)
    x = L.Concatenate()([a, b, c])
    x = L.AveragePooling2D(2)(x)
    x = L.UpSampling2D()(x)
    x = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = L.Activation("relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.1)(x)
    outputs = L.Dense(4)(x)
    return keras.Model(inputs, outputs, name="residual_depthwise")


@pytest.fixture(scope="module")
def residual():
    keras.utils.set_random_seed(1)
    model = residual_depthwise_model()
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):  # trained-like stats
            rng = np.random.default_rng(0)
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
    x, _ = litert_checks.toy_images((16, 16, 3), 4, 128, seed=3)
    qat = litert_checks.observe(q.quantize_model(model), x)
    return qat, x, litert_checks.convert_qat(qat)


def test_residual_model_is_integer_end_to_end(residual):
    qat, x, content = residual
    litert_checks.check_integer_end_to_end(content)
    names = [op.name for op in litert_checks.ops_of(content)]
    assert names.count("ADD") == 1  # the residual; BatchNorms are folded
    assert "MUL" not in names and "RELU" not in names
    concatenations = [
        op
        for op in litert_checks.ops_of(content)
        if op.name == "CONCATENATION" and op.inputs[0]["dtype"] == np.int8
    ]
    assert len(concatenations) == 1


def test_residual_model_file_matches_keras(residual):
    qat, x, content = residual
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )


def test_residual_model_structure(residual):
    qat = residual[0]
    assert not any(
        isinstance(layer, (L.BatchNormalization, L.ReLU))
        for layer in qat.layers
    )
    wrappers = [
        layer for layer in qat.layers if isinstance(layer, q.QuantizeWrapper)
    ]
    folded = [w for w in wrappers if w.batch_norm is not None]
    assert len(folded) == 3
    # Concatenate inputs share the Concatenate's scale.
    for name in ("quant_conv2d_2", "quant_separable_conv2d"):
        assert qat.get_layer(name).quantize_output is False
    # ADD then ReLU: the converter fuses them; only the ReLU quantizes.
    assert qat.get_layer("quant_add").quantize_output is False
    # The max-pooled branch is the ReLU output, which is also used by the
    # other branches: the Concatenate uses that ReLU's range.
    concat = qat.get_layer("quant_concatenate")
    relu = qat.get_layer("quant_re_lu_2")
    shared = concat._range_source.spec[1]["min"]
    assert shared is relu._output_specs[0][1]["min"]
    assert "quant_concatenate/output" not in q.observer_ranges(qat)


def test_sequential_functional_and_nested_graphs():
    keras.utils.set_random_seed(0)
    for kind in ("sequential", "functional"):
        model, x, y = helpers.make_model(kind)
        qat = q.quantize_model(model)
        assert type(qat) is type(model)
        assert isinstance(
            qat.layers[0 if kind == "sequential" else 1], q.QuantizeLayer
        )
        litert_checks.observe(qat, x)
        assert q.unobserved_quantizers(qat) == []

    inner = keras.Sequential(
        [
            keras.Input((8,)),
            L.Dense(8, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
        ],
        name="block",
    )
    inputs = keras.Input((8,))
    x = L.Dense(8, activation="relu")(inputs)
    x = inner(x)
    x = L.Add()([x, inner(x)])  # a shared nested model
    block = keras.Model(inputs, L.Dense(3)(x), name="block_model")
    outer_in = keras.Input((8,))
    model = keras.Model(outer_in, block(outer_in), name="outer")
    qat = q.quantize_model(model)
    quantized_inner = qat.get_layer("block_model").get_layer("block")
    assert isinstance(quantized_inner, keras.Sequential)
    assert [type(layer).__name__ for layer in quantized_inner.layers] == [
        "QuantizeWrapper"
    ]
    assert quantized_inner.layers[0].batch_norm is not None
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    litert_checks.observe(qat, x)
    litert_checks.check_integer_file_follows_keras(qat, x)


def test_subclassed_model_is_quantized_through_an_outer_model():
    keras.utils.set_random_seed(0)
    model, x, y = helpers.make_model("subclassed")
    weights = [w.copy() for w in model.get_weights()]
    qat = q.quantize_model(model)
    assert isinstance(qat, q.QuantizedModel)
    assert len(qat.wrappers) == 4  # hidden, 2 blocks, the nested head
    # No variable is tracked twice (the optimizer would refuse it).
    ids = [id(v) for v in qat.trainable_variables]
    assert len(ids) == len(set(ids))
    helpers.compile_for_test(qat)
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert q.unobserved_quantizers(qat) == []
    litert_checks.check_integer_file_follows_keras(qat, x)
    # The user's model is untouched: same weights, own activation and call.
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert model.hidden.activation is keras.activations.relu
    assert "call" not in vars(model.hidden)


def test_nested_subclassed_model_is_quantized():
    model, x, _ = helpers.make_model("nested")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left float
        qat = q.quantize_model(model)
    sub = qat.get_layer("sub")
    assert isinstance(sub, q.QuantizedModel) and not sub.quantize_inputs
    assert isinstance(
        qat.get_layer("inner_sequential").layers[-1], q.QuantizeWrapper
    )
    litert_checks.observe(qat, x)
    content = litert_checks.convert_qat(qat)
    litert_checks.check_integer_end_to_end(content)


def test_layers_to_quantize_selects_layers():
    model = helpers.functional_mlp()
    qat = q.quantize_model(model, layers_to_quantize=["fc1", "logits"])
    wrapped = {
        layer.name
        for layer in qat.layers
        if isinstance(layer, q.QuantizeWrapper)
    }
    assert wrapped == {"quant_fc1", "quant_logits"}
    # `logits` gets its float input quantized in front of it.
    quantize_layers = [
        layer for layer in qat.layers if isinstance(layer, q.QuantizeLayer)
    ]
    assert len(quantize_layers) == 2
    qat = q.quantize_model(
        model, layers_to_quantize=lambda layer: layer.name != "fc2"
    )
    assert not isinstance(qat.get_layer("fc2"), q.QuantizeWrapper)


def test_bad_selections_raise():
    model = helpers.functional_mlp()
    with pytest.raises(ValueError, match=r"\['nope'\].*not in the model"):
        q.quantize_model(model, layers_to_quantize=["nope"])
    with pytest.raises(ValueError, match="Unknown quantization `scheme`"):
        q.quantize_model(model, scheme="int3")
    with pytest.raises(ValueError, match="preserve_sparsity"):
        q.quantize_model(model, preserve_sparsity="yes")
    inputs = keras.Input((4,))
    norm = L.UnitNormalization(name="norm")(L.Dense(4)(inputs))
    with_norm = keras.Model(inputs, L.Dense(2)(norm))
    with pytest.raises(ValueError, match="'norm' \\(UnitNormalization\\)"):
        q.quantize_model(with_norm, layers_to_quantize=["norm"])
    with pytest.warns(UserWarning, match="'norm' \\(UnitNormalization\\)"):
        q.quantize_model(with_norm)


def test_pruned_and_quantized_models_are_refused():
    model = helpers.functional_mlp()
    pruned = pruning.prune_low_magnitude(model)
    with pytest.raises(ValueError, match="strip_pruning"):
        q.quantize_model(pruned)
    with pytest.raises(ValueError, match="already quantized"):
        q.quantize_model(q.quantize_model(model))
    with pytest.raises(ValueError, match="keras.Model"):
        q.quantize_model(L.Dense(3))
    with pytest.raises(ValueError, match="has not been built"):
        q.quantize_model(helpers.SubclassedMLP())


class ScaledMatMul(keras.layers.Layer):
    """A custom layer that declares its quantization."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units))
        self.b = self.add_weight(shape=(self.units,), initializer="zeros")

    def call(self, x):
        return ops.matmul(x, self.w) + self.b

    def get_quantize_config(self):
        return q.LayerQuantizeConfig(
            {"w": q.LastValueQuantizer()}, q.MovingAverageQuantizer()
        )

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_layer_declares_its_quantize_config():
    inputs = keras.Input((6,))
    x = ScaledMatMul(8, name="custom")(inputs)
    x = L.UnitNormalization(name="norm")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    with pytest.warns(UserWarning, match="'norm'"):
        qat = q.quantize_model(model)
    assert isinstance(qat.get_layer("quant_custom"), q.QuantizeWrapper)
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    litert_checks.observe(qat, x)
    content = litert_checks.convert_qat(qat)
    weights = litert_checks.weight_tensors(content, "FULLY_CONNECTED")
    assert [w.dtype for w, _ in weights] == [np.int8, np.int8]
    # The UnitNormalization (no QuantizeConfig) is the only float island.
    assert set(litert_checks.float_ops_inside(content)) <= {
        "SQUARE",
        "SUM",
        "MAXIMUM",
        "MINIMUM",
        "RSQRT",
        "MUL",
    }
    # Not within a step of Keras: ops of a float island may run on values
    # Keras computes differently (e.g. the converter moves a first op onto
    # int8). Still close: within 10 % of the range.
    keras_out = litert_checks.predict(qat, x)
    diff = np.abs(keras_out - litert_checks.run(content, x))
    assert diff.max() <= 0.1 * (keras_out.max() - keras_out.min())


def test_quantize_configs_override_per_layer():
    model = helpers.functional_mlp()
    config = q.LayerQuantizeConfig(
        {"kernel": q.LastValueQuantizer(num_bits=4)},
        q.MovingAverageQuantizer(num_bits=8),
    )
    qat = q.quantize_model(model, quantize_configs={"fc2": config})
    assert qat.get_layer("quant_fc2").quantize_config is config
    default = qat.get_layer("quant_fc1").quantize_config
    assert default.weight_quantizers["kernel"].num_bits == 8


def test_annotate_and_apply_quantizes_only_annotated_layers():
    inputs = keras.Input((6,))
    x = q.quantize_annotate_layer(L.Dense(8, name="a"))(inputs)
    x = L.Dense(8, name="b")(x)
    outputs = q.quantize_annotate_layer(
        ScaledMatMul(3, name="c"),
        quantize_config=q.LayerQuantizeConfig(
            {"w": q.LastValueQuantizer(num_bits=4)}, None
        ),
    )(x)
    annotated = keras.Model(inputs, outputs)
    qat = q.quantize_apply(annotated)
    assert isinstance(qat.get_layer("quant_a").layer, L.Dense)
    assert isinstance(qat.get_layer("b"), L.Dense)
    c = qat.get_layer("quant_c")
    assert c.quantize_config.weight_quantizers["w"].num_bits == 4
    assert c._output_specs == []
    with pytest.raises(ValueError, match="no layer annotated"):
        q.quantize_apply(helpers.functional_mlp())
    with pytest.raises(ValueError, match="not a model"):
        q.quantize_annotate_layer(helpers.functional_mlp())


def test_four_bit_weight_scheme():
    keras.utils.set_random_seed(0)
    model = reference_cnn(IMAGE_SHAPE, 4)
    qat = q.quantize_model(model, scheme="4bit_weights")
    x, _ = litert_checks.toy_images(IMAGE_SHAPE, 4, 64, seed=0)
    litert_checks.observe(qat, x)
    content = litert_checks.convert_qat(qat)
    litert_checks.check_integer_end_to_end(content)
    for op_name in ("CONV_2D", "FULLY_CONNECTED"):
        for values, _ in litert_checks.weight_tensors(content, op_name):
            assert np.abs(values.astype(int)).max() <= 7
            assert len(np.unique(values)) <= 15
    # Stored packed, as int4 (two values per byte), read from the file.
    stored = convert.weight_tensors(content)
    assert stored and all(
        t.dtype == "int4"
        and t.compute == "integer"
        and t.num_bytes == int(np.ceil(np.prod(t.shape) / 2))
        for t in stored
    ), stored
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )


def _trained_like_batch_norms(model):
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.1, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape))
    return model


def test_four_bit_weights_on_a_mobile_style_network():
    # Depthwise, separable, 1x1 and strided convolutions, folded
    # BatchNorms, a residual Add and a concatenation, with 4-bit weights:
    # every weight operator of the file, depthwise ones included, stores
    # packed int4 and runs on integer kernels that follow the Keras model.
    keras.utils.set_random_seed(1)
    model = _trained_like_batch_norms(residual_depthwise_model())
    x, y = litert_checks.toy_images((16, 16, 3), 4, 128, seed=3)
    qat = q.quantize_model(model, scheme="4bit_weights")
    litert_checks.compile_and_fit(qat, x, y, epochs=1, learning_rate=1e-3)
    content = litert_checks.check_integer_file_follows_keras(qat, x)
    stored = convert.weight_tensors(content)
    kinds = {(t.op_name, t.dtype, t.compute) for t in stored}
    assert kinds == {
        ("CONV_2D", "int4", "integer"),
        ("DEPTHWISE_CONV_2D", "int4", "integer"),
        ("FULLY_CONNECTED", "int4", "integer"),
    }, stored


def test_four_and_eight_bit_weights_per_layer():
    # `quantize_configs` gives a layer another scheme: the classifier
    # keeps 8-bit weights in a 4-bit model, and the file stores exactly
    # that split (read back from the flatbuffer).
    keras.utils.set_random_seed(0)
    model = reference_cnn(IMAGE_SHAPE, 4)
    head = [layer.name for layer in model.layers if layer.weights][-1]
    qat = q.quantize_model(
        model, scheme="4bit_weights", quantize_configs={head: "default_8bit"}
    )
    assert qat.get_layer(f"quant_{head}").quantize_config.weight_quantizers
    x, y = litert_checks.toy_images(IMAGE_SHAPE, 4, 128, seed=0)
    litert_checks.compile_and_fit(qat, x, y, epochs=1, learning_rate=1e-3)
    content = litert_checks.check_integer_file_follows_keras(qat, x)
    stored = [(t.op_name, t.dtype) for t in convert.weight_tensors(content)]
    assert stored[-1] == ("FULLY_CONNECTED", "int8"), stored
    assert set(stored[:-1]) == {
        ("CONV_2D", "int4"),
        ("FULLY_CONNECTED", "int4"),
    }
    # The earlier name of the scheme is the same scheme.
    assert schemes.get_scheme("experimental_4bit_weights").name == (
        "4bit_weights"
    )


def test_per_layer_schemes_are_checked():
    model = helpers.nested_model()
    inner = next(
        layer.name for layer in model.layers if isinstance(layer, keras.Model)
    )
    with pytest.raises(ValueError, match=f"'{inner}'.*name the layers inside"):
        q.quantize_model(model, quantize_configs={inner: "4bit_weights"})
    with pytest.raises(ValueError, match="Unknown quantization `scheme`"):
        q.quantize_model(model, quantize_configs={inner: "3bit"})
    with pytest.raises(ValueError, match=r"\['nope'\].*not in the model"):
        q.quantize_model(model, quantize_configs={"nope": "4bit_weights"})


def test_pruned_zeros_stay_zero_through_qat():
    keras.utils.set_random_seed(0)
    model, x, y = helpers.make_model("sequential")
    pruned = pruning.prune_low_magnitude(
        model, pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=1)
    )
    helpers.compile_for_test(pruned)
    pruned.fit(
        x,
        y,
        epochs=1,
        batch_size=32,
        verbose=0,
        callbacks=[pruning.UpdatePruningStep()],
    )
    stripped = pruning.strip_pruning(pruned)
    qat = q.quantize_model(stripped)  # preserve_sparsity=None: automatic
    wrappers = [
        layer for layer in qat.layers if isinstance(layer, q.QuantizeWrapper)
    ]
    assert all(w.preserve_sparsity for w in wrappers)
    litert_checks.compile_and_fit(qat, x, y, epochs=2, learning_rate=1e-2)
    for wrapper in wrappers:
        kernel = wrapper.layer.kernel.numpy()
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
        mask = wrapper.sparsity_masks[0].numpy()
        assert np.all(kernel[mask == 0] == 0)
    content = litert_checks.convert_qat(qat)
    for op_name in ("CONV_2D", "FULLY_CONNECTED"):
        for values, _ in litert_checks.weight_tensors(content, op_name):
            assert np.mean(values == 0) >= 0.48
    # Without it the zeros fill in.
    plain = q.quantize_model(stripped, preserve_sparsity=False)
    litert_checks.compile_and_fit(plain, x, y, learning_rate=1e-2)
    kernel = plain.get_layer("quant_dense").layer.kernel.numpy()
    assert np.mean(kernel == 0) < 0.4


def test_untrained_ranges_are_reported():
    model = helpers.functional_mlp()
    qat = q.quantize_model(model)
    assert q.is_quantization_aware(qat) and not q.is_quantization_aware(model)
    assert "quant_fc1/output" in q.unobserved_quantizers(qat)
    x = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    litert_checks.observe(qat, x)
    assert q.unobserved_quantizers(qat) == []
    ranges = q.observer_ranges(qat)
    low, high = ranges["quant_fc1/output"]
    assert low == 0.0 and high > 0.0  # ReLU output


def test_no_quantizable_layer_raises():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.UnitNormalization()(inputs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="No layer was quantized"):
            q.quantize_model(model)


def test_relu_after_a_nested_model_is_fused_into_its_last_layer():
    # Conv -> BN inside a nested Sequential, then a ReLU outside: LiteRT
    # fuses CONV_2D+RELU, so the ReLU must move into the nested wrapper
    # (a separate fake-quant before it would round differently).
    block = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            L.Conv2D(4, 3, padding="same", name="block_conv"),
            L.BatchNormalization(name="block_bn"),
        ],
        name="block",
    )
    inputs = keras.Input((6, 6, 4))
    x = L.ReLU(name="after_block")(block(inputs))
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("block").get_layer("block_bn").set_weights(
        [np.full(4, 1.5), np.full(4, -0.2), np.full(4, 0.3), np.full(4, 2.0)]
    )
    x = np.random.default_rng(0).normal(size=(256, 6, 6, 4)).astype("float32")
    qat = q.quantize_model(model)
    names = [layer.name for layer in qat.layers]
    assert "after_block" not in names
    wrapper = qat.get_layer("block").layers[-1]
    assert wrapper.batch_norm is not None
    assert wrapper.activation is keras.activations.relu
    # Trained, not only observed: a folded BatchNorm computes with batch
    # statistics in training mode, so observed ranges would be off.
    litert_checks.compile_and_fit(qat, x, np.arange(256) % 3)
    content = litert_checks.convert_qat(qat)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )


@pytest.mark.parametrize("recurrent", ["lstm", "bidirectional_gru"])
def test_recurrent_layers_are_refused_before_training(recurrent):
    inputs = keras.Input((5,), dtype="int32")
    x = L.Embedding(10, 4)(inputs)
    if recurrent == "lstm":
        x = L.LSTM(6, name="rnn")(x)
    else:
        x = L.Bidirectional(L.GRU(6), name="rnn")(x)
    model = keras.Model(inputs, L.Dense(2)(x))
    message = "Layer 'rnn' .* is recurrent.*dynamic"
    with pytest.raises(ValueError, match=message):
        q.quantize_model(model)


@keras.saving.register_keras_serializable(package="keras_compress_tests")
class ConvBatchNorm(keras.Model):
    """Conv -> BN in a subclassed model; `reuse_raw=True` also adds the
    conv's raw output (so the BatchNorm must not be folded)."""

    def __init__(self, reuse_raw=False, **kwargs):
        super().__init__(**kwargs)
        self.reuse_raw = reuse_raw
        self.conv = L.Conv2D(4, 3, padding="same")
        self.bn = L.BatchNormalization()
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(3)

    def call(self, inputs, training=None):
        raw = self.conv(inputs)
        x = self.bn(raw, training=training)
        if self.reuse_raw:
            x = x + raw
        return self.head(self.pool(x))

    def get_config(self):
        return {**super().get_config(), "reuse_raw": self.reuse_raw}


@pytest.mark.parametrize("reuse_raw", [False, True])
def test_subclassed_batch_norm_is_folded_when_nothing_else_reads_the_conv(
    reuse_raw, tmp_path
):
    model = ConvBatchNorm(reuse_raw)
    x = np.random.default_rng(0).normal(size=(64, 6, 6, 2)).astype("float32")
    model(x)
    model.bn.set_weights(
        [np.full(4, 1.5), np.full(4, -0.2), np.full(4, 0.3), np.full(4, 2.0)]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = q.quantize_model(model)
    warned_bn = any("batch_normalization" in str(w.message) for w in caught)
    conv_wrapper = qat.wrappers[0]
    if reuse_raw:
        # Not folded: quantized on its own, as LiteRT's MUL and ADD.
        assert conv_wrapper.batch_norm is None and not warned_bn
        assert [type(w.layer).__name__ for w in qat.wrappers[:2]] == [
            "Conv2D",
            "BatchNormalization",
        ]
        return
    assert conv_wrapper.batch_norm is not None and not warned_bn
    litert_checks.compile_and_fit(qat, x, np.arange(64) % 3)
    # The fold survives saving (the entry records the BatchNorm).
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    assert loaded.wrappers[0].batch_norm is not None
    np.testing.assert_allclose(
        litert_checks.predict(loaded, x), litert_checks.predict(qat, x)
    )
    litert_checks.check_integer_file_follows_keras(qat, x)


def test_arithmetic_written_with_operators_is_quantized_as_merge_layers():
    # `a + b` on symbolic tensors is a keras.ops Add operation, not a
    # layer; it is quantized as the Add layer computing the same.
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 3, padding="same")(inputs)
    b = L.Conv2D(4, 1)(inputs)
    x = keras.layers.ReLU()(a + b)
    x = x * L.Conv2D(4, 1, activation="sigmoid")(x)
    x = x - L.Conv2D(4, 1)(x)
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    x, y = litert_checks.toy_images((6, 6, 3), 3, 128, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qat = q.quantize_model(model)
    merges = [
        type(layer.layer).__name__
        for layer in qat.layers
        if isinstance(layer, q.QuantizeWrapper)
        and type(layer.layer).__name__ in ("Add", "Multiply", "Subtract")
    ]
    assert merges == ["Add", "Multiply", "Subtract"]
    litert_checks.compile_and_fit(qat, x, y)
    litert_checks.check_integer_file_follows_keras(qat, x)


def test_preprocessing_layer_scale_and_stochastic_depth():
    # keras.applications ConvNeXt's own layers: LayerScale is an int8 MUL
    # by a quantized gamma, StochasticDepth the identity in the file; the
    # Rescaling and Normalization of the input run as int8 MUL and ADD.
    from keras_compress.core import keras_private

    inputs = keras.Input((6, 6, 8))
    x = L.Rescaling(0.5, offset=-1.0)(inputs)
    x = L.Normalization(mean=np.linspace(-1, 1, 8), variance=np.arange(1, 9))(x)
    x = L.Dense(8)(x)
    x = keras_private.APPLICATIONS_LAYER_SCALE(0.5, 8, name="scale")(x)
    x = keras_private.APPLICATIONS_STOCHASTIC_DEPTH(0.1, name="drop")(x)
    x = L.Add()([inputs, x])
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    x, y = litert_checks.toy_images((6, 6, 8), 3, 128, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qat = q.quantize_model(model)
    wrapped = [w.name for w in qat.layers if isinstance(w, q.QuantizeWrapper)]
    assert wrapped[:2] == ["quant_rescaling", "quant_normalization"]
    assert "quant_scale" in wrapped
    assert qat.get_layer("drop") is not None  # copied as it is
    litert_checks.compile_and_fit(qat, x, y)
    litert_checks.check_integer_file_follows_keras(qat, x)


def test_a_language_models_tied_embedding_runs_on_int8():
    # As KerasHub's causal LMs: the backbone looks tokens up, the head is
    # the same table reversed. The file runs an int8 GATHER and an int8
    # FULLY_CONNECTED by the same table, and the token ids stay integers.
    model = helpers.tied_language_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing left float
        qat = q.quantize_model(model)
    x = np.random.default_rng(0).integers(0, 16, (64, 5)).astype("int32")
    qat.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qat.fit(x, np.roll(x, -1, axis=1), epochs=2, verbose=0)
    content = litert_checks.convert_qat(qat)
    ops_ = [op.name for op in litert_checks.ops_of(content)]
    assert litert_checks.float_ops_inside(content) == [], ops_
    assert "QUANTIZE" not in ops_  # the ids are not quantized
    assert ops_.count("FULLY_CONNECTED") == 2
    tables = [
        op.inputs[0]["value"]
        for op in litert_checks.ops_of(content)
        if op.name == "GATHER" and op.inputs[0]["value"] is not None
    ]
    assert any(t.dtype == np.int8 and t.shape == (16, 8) for t in tables)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )
