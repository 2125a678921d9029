"""QAT of transformer blocks: EinsumDense, MultiHeadAttention, LayerNorm.

The converted file is checked op by op: every projection is an int8
FULLY_CONNECTED (int8 weights, int32 bias), both attention products are
int8 BATCH_MATMUL, the softmax is an int8 SOFTMAX and the
LayerNormalization runs as int8 MEAN/SUB/MUL/RSQRT/ADD ops: nothing
between the input QUANTIZE and the output DEQUANTIZE is float.

Tolerance, file vs Keras QAT model: the one of `litert_checks` (98 % of
the outputs within one output step, all within 3 steps), for the same
reason (Keras rounds float results, LiteRT rounds exact integer sums; they
disagree by one step near a rounding boundary). Two kernels add their own
one-step differences here: LiteRT's int8 SOFTMAX and RSQRT use lookup
tables, not exact functions, and the LayerNormalization multiplies a
one-step difference of its inverse deviation across the row. Measured
(3 seeds, 500 samples, after one epoch of QAT): MultiHeadAttention output
94-98 % bit-identical, >= 99.9 % within one step, max 2 steps; the
LayerNormalization output >= 98.8 % within one step, max 5 steps; the
model's logits 73-84 % identical, 99.3-99.5 % within one step, max 3
steps.
"""

import tempfile
import warnings

import keras
import numpy as np
import pytest
from keras import layers as L

from keras_compress import quantization as q
from keras_compress.convert import op_details
from keras_compress.convert import verify
from keras_compress.quantization import computations as computations_lib
from tests.quantization import litert_checks

SEQ, DIM = 8, 16


def transformer_block(seed=0):
    """Input -> MHA + residual -> LayerNorm -> FFN + residual -> logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SEQ, DIM))
    attention = L.MultiHeadAttention(2, 8, name="mha")(inputs, inputs)
    x = L.Add(name="residual")([inputs, attention])
    x = L.LayerNormalization(name="norm")(x)
    ffn = L.EinsumDense(
        "abc,cd->abd",
        output_shape=(None, 32),
        bias_axes="d",
        activation="relu",
        name="ffn_in",
    )(x)
    ffn = L.Dense(DIM, name="ffn_out")(ffn)
    x = L.Add(name="residual_ffn")([x, ffn])
    x = L.GlobalAveragePooling1D()(x)
    outputs = L.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs)


def data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, SEQ, DIM)).astype("float32")
    return x, rng.integers(0, 4, n)


@pytest.fixture(scope="module")
def trained_block():
    model = transformer_block()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = q.quantize_model(model)
    x, y = data(128, 1)
    litert_checks.compile_and_fit(qat, x, y, epochs=1)  # 4 steps
    content = litert_checks.convert_qat(qat)
    return model, qat, content, [str(w.message) for w in caught]


def test_transformer_layers_are_quantized(trained_block):
    model, qat, _, messages = trained_block
    assert not [m for m in messages if "not fully quantized" in m], messages
    for name in ("mha", "norm", "ffn_in", "ffn_out", "logits"):
        assert isinstance(qat.get_layer(f"quant_{name}"), q.QuantizeWrapper)
    mha = qat.get_layer("quant_mha")
    assert len(mha.quantized_weights) == 4  # query, key, value, output
    names = {name.split("/")[-1] for name, _, _ in mha.observer_variables()}
    assert names == {"output", "query", "key", "value", "scores", "attention"}
    # The softmax output has LiteRT's fixed range (scale 1/256).
    probs = mha.quantize_config.intermediate_quantizers["probs"]
    assert isinstance(probs, q.FixedRangeQuantizer)
    # The ranges were learned in training, and the user's model is intact.
    for _, low, high in mha.observer_variables():
        assert float(high.numpy()) > float(low.numpy())
    assert not any(isinstance(x, q.QuantizeWrapper) for x in model.layers)


def test_transformer_block_is_integer_end_to_end(trained_block):
    _, _, content, _ = trained_block
    litert_checks.check_integer_end_to_end(content)
    ops = op_details(content)
    counts = {}
    for op in ops:
        counts[op.op_name] = counts.get(op.op_name, 0) + 1
    # Projections q, k, v, output; the FFN's EinsumDense and Dense; logits.
    fully_connected = [op for op in ops if op.op_name == "FULLY_CONNECTED"]
    assert len(fully_connected) == 7
    for op in fully_connected:
        assert op.input_dtypes == ("int8", "int8", "int32"), op
        assert op.output_dtypes == ("int8",), op
    batch_matmul = [op for op in ops if op.op_name == "BATCH_MATMUL"]
    assert len(batch_matmul) == 2  # scores and weighted sum
    for op in batch_matmul:
        assert op.input_dtypes == ("int8", "int8"), op
        assert op.output_dtypes == ("int8",), op
    for name in ("SOFTMAX", "RSQRT", "MEAN", "SUB", "MUL"):
        found = [op for op in ops if op.op_name == name]
        assert found, (name, counts)
        assert all(op.output_dtypes == ("int8",) for op in found), found
    # `verify` reports the same.
    x, _ = data(16, 2)
    qat = trained_block[1]
    assert verify(qat, content, x, latency_runs=0).float_ops == ()


def test_transformer_block_matches_keras(trained_block):
    _, qat, content, _ = trained_block
    x, _ = data(300, 3)
    within_one, max_steps = litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )
    assert within_one >= litert_checks.MIN_FRACTION_WITHIN_ONE_STEP
    assert max_steps <= litert_checks.MAX_STEPS


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
def test_deprecated_rms_scaling_layer_norm_stays_float():
    inputs = keras.Input((SEQ, DIM))
    norm = L.LayerNormalization(rms_scaling=True, name="rms")(inputs)
    model = keras.Model(inputs, L.Dense(4)(norm))
    with pytest.warns(UserWarning, match="'rms' \\(LayerNormalization\\)"):
        qat = q.quantize_model(model)
    assert not isinstance(qat.get_layer("rms"), q.QuantizeWrapper)


def test_causal_attention_matches_within_two_steps():
    # The causal mask becomes an int8 SELECT_V2 before and after the
    # SOFTMAX; the wrapper masks with the bottom of the scores' range as
    # the file does (Keras's -1e9 on the int8 grid).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SEQ, DIM))
    outputs = L.MultiHeadAttention(2, 8, name="mha")(
        inputs, inputs, use_causal_mask=True
    )
    qat = q.quantize_model(keras.Model(inputs, outputs))
    x, _ = data(64, 4)
    litert_checks.observe(qat, x)
    content = litert_checks.convert_qat(qat)
    litert_checks.check_integer_end_to_end(content)
    select = [op for op in op_details(content) if op.op_name == "SELECT_V2"]
    assert [op.output_dtypes for op in select] == [("int8",)] * 2
    step = litert_checks.output_step(content)
    diff = np.abs(litert_checks.predict(qat, x) - litert_checks.run(content, x))
    # Attention alone: measured 100 % within one step (max 1 step).
    assert np.mean(diff <= step * 1.001) >= 0.995
    assert diff.max() <= 2 * step * 1.001


def test_save_and_load(trained_block):
    _, qat, _, _ = trained_block
    x, _ = data(16, 5)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/qat.keras"
        qat.save(path)
        loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        litert_checks.predict(loaded, x), litert_checks.predict(qat, x)
    )
    mha = loaded.get_layer("quant_mha")
    assert isinstance(mha.layer, L.MultiHeadAttention)
    assert set(mha.quantize_config.intermediate_quantizers) == {
        "query",
        "key",
        "value",
        "scores",
        "probs",
        "attention",
    }


@keras.saving.register_keras_serializable(package="kc_tests")
class AttentionBlock(keras.Model):
    """A subclassed block: MultiHeadAttention, residual, LayerNorm, head."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = L.MultiHeadAttention(2, 8)
        self.residual = L.Add()
        self.norm = L.LayerNormalization()
        self.flatten = L.Flatten()
        self.head = L.Dense(4)

    def call(self, x):
        x = self.residual([x, self.attention(x, x)])
        return self.head(self.flatten(self.norm(x)))


def test_subclassed_transformer_block():
    keras.utils.set_random_seed(0)
    model = AttentionBlock()
    x, _ = data(64, 7)
    model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every layer is quantized
        qat = q.quantize_model(model)
    # The projections and softmax inside the attention are its own, not
    # wrapped separately.
    wrapped = sorted(type(w.layer).__name__ for w in qat.wrappers)
    assert wrapped == [
        "Add",
        "Dense",
        "LayerNormalization",
        "MultiHeadAttention",
    ]
    litert_checks.observe(qat, x)
    content = litert_checks.convert_qat(qat)
    litert_checks.check_integer_end_to_end(content)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )
    with tempfile.TemporaryDirectory() as tmp:
        qat.save(f"{tmp}/qat.keras")
        loaded = keras.saving.load_model(f"{tmp}/qat.keras")
    np.testing.assert_array_equal(
        litert_checks.predict(loaded, x), litert_checks.predict(qat, x)
    )


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, {"normalized", "scaled"}),
        ({"center": False}, {"normalized"}),
        ({"scale": False}, {"normalized"}),
        ({"scale": False, "center": False}, set()),
    ],
)
def test_layer_norm_variants_follow_keras(kwargs, expected):
    layer = L.LayerNormalization(name="norm", **kwargs)
    layer.build((None, SEQ, DIM))
    if layer.scale:
        layer.gamma.assign(np.linspace(0.5, 1.5, DIM))
    if layer.center:
        layer.beta.assign(np.linspace(-0.2, 0.2, DIM))
    config = q.QuantizeScheme().get_quantize_config(layer)
    common = {"mean", "centered", "squared", "variance", "variance_eps"}
    common.add("inv_std")
    assert set(config.intermediate_quantizers) == common | expected
    wrapper = q.QuantizeWrapper(layer, quantize_config=config)
    x, _ = data(32, 6)
    x = x * 2.0 + 1.0
    wrapper(x, training=True)  # sets the ranges
    got = keras.ops.convert_to_numpy(wrapper(x, training=False))
    want = keras.ops.convert_to_numpy(layer(x))
    # Several int8 roundings in a row: within a few output steps.
    low, high = wrapper.observer_variables()[0][1:]
    step = (float(high.numpy()) - min(float(low.numpy()), 0.0)) / 255
    assert np.abs(got - want).max() <= 6 * step


@pytest.mark.parametrize(
    "equation, input_shape, kernel_shape, bias_shape",
    [
        ("abc,cde->abde", (3, 8, 16), (16, 2, 8), (2, 8)),  # MHA projection
        ("abcd,cde->abe", (3, 8, 2, 8), (2, 8, 16), (16,)),  # MHA output
        ("...i,io->...o", (3, 8, 16), (16, 4), (4,)),  # Dense on 3D
        ("abc,cd->abd", (3, 8, 16), (16, 4), None),
        ("abc,dc->abd", (3, 8, 16), (4, 16), (4,)),  # not a plain matmul
    ],
)
def test_projection_as_matmul_equals_einsum(
    equation, input_shape, kernel_shape, bias_shape
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=input_shape).astype("float32")
    kernel = rng.normal(size=kernel_shape).astype("float32")
    bias = None
    if bias_shape is not None:
        bias = rng.normal(size=bias_shape).astype("float32")
    got = computations_lib.project(
        keras.ops.convert_to_tensor(x), equation, kernel, bias
    )
    want = np.einsum(equation, x, kernel)
    if bias is not None:
        want = want + bias
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), want, rtol=1e-5, atol=1e-5
    )


def test_four_bit_weights_reach_the_file_packed():
    # QAT with the 4-bit scheme: every projection of the attention block
    # stores int4 weights (read back from the flatbuffer) and the file
    # follows the fake-quant model as closely as the 8-bit one does.
    from keras_compress.convert import weight_tensors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = q.quantize_model(transformer_block(), scheme="4bit_weights")
    x, y = data(128, 1)
    litert_checks.compile_and_fit(qat, x, y, epochs=1)
    content = litert_checks.convert_qat(qat)
    litert_checks.check_integer_end_to_end(content)
    stored = [t for t in weight_tensors(content) if t.op_name != "GATHER"]
    assert len(stored) == 7, stored
    assert all((t.dtype, t.compute) == ("int4", "integer") for t in stored), (
        stored
    )
    # With its biases on the int32 grid the file adds them on (as coarse
    # as 4-bit weights are), the block is within one step on >= 98 % of
    # the logits, as 8-bit files are (measured 99.7 %; 97.4 % before).
    x, _ = data(300, 3)
    litert_checks.check_matches_keras(
        litert_checks.predict(qat, x),
        litert_checks.run(content, x),
        litert_checks.output_step(content),
    )
