"""Channel pruning: plans, the rebuilt smaller model, the masked original."""

import keras
import numpy as np
import pytest

from keras_compress import convert
from keras_compress import distillation
from keras_compress.pruning import structured
from tests import helpers

L = keras.layers


def _randomize(model, seed=0):
    # Random weights everywhere (biases, BN statistics too) so that a wrong
    # slice or a forgotten channel changes the outputs.
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(scale=0.5, size=weight.shape)
        if "variance" in weight.name:
            value = np.abs(value) + 0.5
        weight.assign(value.astype("float32"))
    return model


def conv_chain():
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            L.Conv2D(8, 3, name="c1"),
            L.BatchNormalization(name="bn1"),
            L.ReLU(),
            L.MaxPooling2D(),
            L.Conv2D(6, 3, activation="relu", name="c2"),
            L.Flatten(),
            L.Dropout(0.1),
            L.Dense(10, activation="relu", name="fc"),
            L.Dense(4, name="out"),
        ],
        name="conv_chain",
    )


def residual_block():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = L.Conv2D(8, 3, padding="same", name="branch")(x)
    y = L.BatchNormalization(name="bn")(y)
    x = L.Add()([x, y])
    x = L.ReLU()(x)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(4, name="out")(x)
    return keras.Model(inputs, outputs, name="residual")


def concat_block():
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 1, name="a")(inputs)
    b = L.Conv2D(4, 3, padding="same", name="b")(inputs)
    x = L.Concatenate()([a, b])
    x = L.Conv2D(5, 1, activation="relu", name="mix")(x)
    x = L.Concatenate()([x, a])
    x = L.Flatten()(L.MaxPooling2D(4)(x))
    outputs = L.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs, name="concat")


def separable_block():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="bn0")(x)
    x = L.ReLU(6.0)(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.ReLU()(y)
    y = L.Conv2D(8, 1, name="pw")(y)
    x = L.Add()([x, y])
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = L.GlobalMaxPooling2D()(x)
    outputs = L.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs, name="separable")


def dense_mlp():
    return keras.Sequential(
        [
            keras.Input((12,)),
            L.Dense(16, activation="relu", name="h1"),
            L.Dense(8, activation="tanh", name="h2"),
            L.Dense(3, name="out"),
        ],
        name="mlp",
    )


def nested():
    inner = keras.Sequential(
        [keras.Input((6,)), L.Dense(8, name="inner_fc")], name="inner"
    )
    inputs = keras.Input((6,))
    x = L.Dense(10, activation="relu", name="a")(inner(inputs))
    x = L.Dense(8, activation="relu", name="b")(x)
    outputs = L.Dense(2, name="out")(x)
    return keras.Model(inputs, outputs, name="nested")


def squeeze_excite():
    # Gate channels with a sigmoid of their own pooled values (SE block):
    # the gate's Dense is tied to the conv by Multiply through a Reshape.
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    gate = L.GlobalAveragePooling2D()(x)
    gate = L.Dense(4, activation="relu", name="squeeze")(gate)
    gate = L.Dense(8, activation="sigmoid", name="excite")(gate)
    gate = L.Reshape((1, 1, 8))(gate)
    x = L.Multiply()([x, gate])
    outputs = L.Dense(3, name="out")(L.Flatten()(x))
    return keras.Model(inputs, outputs, name="squeeze_excite")


def sequence_model():
    # Conv1D, padding/upsampling and a Concatenate added to a matching one.
    inputs = keras.Input((10, 4))
    a = L.Conv1D(6, 3, padding="same", name="a")(inputs)
    b = L.Conv1D(4, 1, name="b")(inputs)
    x = L.Concatenate()([a, b])
    c = L.Conv1D(6, 3, padding="same", name="c")(x)
    d = L.Conv1D(4, 1, name="d")(x)
    x = L.Add()([x, L.Concatenate()([c, d])])
    x = L.BatchNormalization(name="bn")(L.ZeroPadding1D(1)(x))
    x = L.Conv1D(5, 3, activation="relu", name="e")(L.UpSampling1D()(x))
    x = L.Dense(4, activation="relu", name="per_step")(x)
    outputs = L.Dense(2, name="out")(L.GlobalMaxPooling1D()(x))
    return keras.Model(inputs, outputs, name="sequence")


BUILDERS = {
    "conv_chain": conv_chain,
    "residual": residual_block,
    "concat": concat_block,
    "separable": separable_block,
    "mlp": dense_mlp,
    "nested": nested,
    "squeeze_excite": squeeze_excite,
    "sequence": sequence_model,
}


def _model_and_data(kind, n=16):
    model = _randomize(BUILDERS[kind]())
    shape = tuple(model.inputs[0].shape[1:])
    x = np.random.default_rng(1).normal(size=(n, *shape)).astype("float32")
    return model, x


def _layer_shapes(model):
    return [tuple(w.shape) for w in model.weights]


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_rebuilt_model_computes_like_the_masked_original(kind):
    model, x = _model_and_data(kind)
    before = [w.numpy().copy() for w in model.weights]
    plan = structured.channel_plan(model, 0.5)
    small = structured.apply_channel_plan(model, plan)
    masked = structured.mask_channels(model, plan)
    assert plan.keep, "nothing was pruned"
    assert small.count_params() < model.count_params()
    # Same layers as the original: only the kernels' input rows are zero.
    assert _layer_shapes(masked) == _layer_shapes(model)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-4
    )
    # Masking really changes the function (the test would otherwise be moot).
    assert not np.allclose(
        model.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-3
    )
    # The user's model is untouched.
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


@pytest.mark.parametrize(
    "kind", ["conv_chain", "residual", "concat", "separable"]
)
def test_rebuilt_model_converts_to_litert_with_equal_outputs(kind):
    model, x = _model_and_data(kind)
    small = structured.prune_channels(model, 0.5)
    content = convert.to_tflite(small)
    np.testing.assert_allclose(
        convert.run_tflite(content, x), small.predict(x, verbose=0), atol=1e-4
    )


def test_conv_chain_shapes_and_params():
    model, _ = _model_and_data("conv_chain")
    small = structured.prune_channels(model, 0.5)
    assert small.get_layer("c1").kernel.shape == (3, 3, 3, 4)
    assert small.get_layer("bn1").gamma.shape == (4,)
    assert small.get_layer("c2").kernel.shape == (3, 3, 4, 3)
    # Flatten of 2x2x3 feeds the Dense 12 rows instead of 24.
    assert small.get_layer("fc").kernel.shape == (12, 5)
    assert small.get_layer("out").kernel.shape == (5, 4)
    expected = (
        (3 * 3 * 3 * 4 + 4)  # c1
        + 4 * 4  # bn1: gamma, beta, mean, variance
        + (3 * 3 * 4 * 3 + 3)  # c2
        + (2 * 2 * 3 * 5 + 5)  # fc
        + (5 * 4 + 4)  # out
    )
    assert small.count_params() == expected


def test_flatten_keeps_the_rows_of_the_kept_channels():
    model, _ = _model_and_data("conv_chain")
    plan = structured.channel_plan(model, 0.5)
    small = structured.apply_channel_plan(model, plan)
    kept = plan.kept_channels("c2")
    rows = np.concatenate([p * 6 + kept for p in range(4)])  # 2x2 positions
    np.testing.assert_array_equal(
        small.get_layer("fc").kernel.numpy(),
        model.get_layer("fc").kernel.numpy()[rows][:, plan.kept_channels("fc")],
    )


def test_tied_layers_keep_the_same_channels():
    model, _ = _model_and_data("residual")
    plan = structured.channel_plan(model, 0.5)
    np.testing.assert_array_equal(
        plan.kept_channels("stem"), plan.kept_channels("branch")
    )
    group = plan.graph.group_of("stem")
    assert group.producers == ["stem", "branch"]
    assert "bn" in group.followers
    small = structured.apply_channel_plan(model, plan)
    assert small.get_layer("stem").kernel.shape[-1] == 4
    assert small.get_layer("branch").kernel.shape == (3, 3, 4, 4)
    assert small.get_layer("out").kernel.shape == (4, 4)


def test_concatenate_offsets_and_depthwise_follow_their_producers():
    model, _ = _model_and_data("concat")
    plan = structured.channel_plan(model, 0.5)
    small = structured.apply_channel_plan(model, plan)
    keep_a, keep_b = plan.kept_channels("a"), plan.kept_channels("b")
    rows = np.concatenate([keep_a, 6 + keep_b])
    np.testing.assert_array_equal(
        small.get_layer("mix").kernel.numpy(),
        model.get_layer("mix").kernel.numpy()[:, :, rows][
            ..., plan.kept_channels("mix")
        ],
    )
    sep_model, _ = _model_and_data("separable")
    small = structured.prune_channels(sep_model, 0.5)
    assert small.get_layer("dw").kernel.shape == (3, 3, 4, 1)
    assert small.get_layer("sep").depthwise_kernel.shape == (3, 3, 4, 1)
    assert small.get_layer("sep").pointwise_kernel.shape == (1, 1, 4, 3)


def test_nested_model_is_inlined_and_its_channels_pruned():
    model, x = _model_and_data("nested")
    plan = structured.channel_plan(model, 0.5)
    small = structured.apply_channel_plan(model, plan)
    # The nested Sequential's layers join the outer graph, names kept.
    assert not any(isinstance(layer, keras.Model) for layer in small.layers)
    assert small.get_layer("inner_fc").kernel.shape == (6, 4)
    assert small.get_layer("a").kernel.shape == (4, 5)
    assert small.get_layer("b").kernel.shape == (5, 4)
    # The smaller model computes what the masked one does, and the user's
    # nested model is unchanged.
    masked = structured.mask_channels(model, plan)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5
    )
    assert model.get_layer("inner").get_layer("inner_fc").kernel.shape == (
        6,
        8,
    )


def test_channel_pruning_that_can_remove_nothing_raises():
    inputs = keras.Input((5,), dtype="int32")
    x = L.Embedding(10, 4)(inputs)
    x = L.LSTM(6, name="lstm")(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    with pytest.raises(ValueError, match="found no channel.*prune_low"):
        structured.prune_channels(model, 0.5)


def test_squeeze_excite_gate_is_pruned_with_its_conv():
    model, _ = _model_and_data("squeeze_excite")
    plan = structured.channel_plan(model, 0.5)
    assert plan.graph.group_of("conv").producers == ["conv", "excite"]
    small = structured.apply_channel_plan(model, plan)
    assert small.get_layer("excite").kernel.shape == (2, 4)
    assert small.get_layer("squeeze").kernel.shape == (4, 2)


def test_softmax_hidden_layer_is_left_whole():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(8, activation="softmax", name="attention"),
            L.Dense(8, activation="relu", name="h"),
            L.Dense(2, name="out"),
        ]
    )
    plan = structured.channel_plan(model, 0.5)
    assert plan.kept_channels("attention") is None
    assert len(plan.kept_channels("h")) == 4
    with pytest.raises(ValueError, match="'attention'.*softmax"):
        structured.channel_plan(model, 0.5, layers=["attention"])


def test_layers_as_a_callable():
    model, _ = _model_and_data("conv_chain")
    plan = structured.channel_plan(
        model, 0.5, layers=lambda layer: isinstance(layer, L.Conv2D)
    )
    assert len(plan.kept_channels("c1")) == 4
    assert len(plan.kept_channels("c2")) == 3
    assert plan.kept_channels("fc") is None
    assert "not selected" in plan.skipped[plan.graph.group_of("fc").index]


def test_concatenates_added_together_tie_segment_by_segment():
    model, _ = _model_and_data("sequence")
    plan = structured.channel_plan(model, 0.5)
    assert plan.graph.group_of("a").producers == ["a", "c"]
    assert plan.graph.group_of("b").producers == ["b", "d"]
    small = structured.apply_channel_plan(model, plan)
    assert small.get_layer("e").kernel.shape == (3, 3 + 2, 3)
    assert small.get_layer("bn").gamma.shape == (5,)


def test_output_and_blocked_groups_are_left_whole_with_a_reason():
    model, _ = _model_and_data("residual")
    plan = structured.channel_plan(model, 0.5)
    out_group = plan.graph.group_of("out")
    assert out_group.index not in plan.keep
    assert "model output" in plan.skipped[out_group.index]
    text = str(plan)
    assert "stem, branch" in text and "model output" in text


def test_l1_criterion_keeps_the_largest_filters():
    model = dense_mlp()
    kernel = np.full((12, 16), 0.01, "float32")
    big = [1, 4, 5, 9, 10, 12, 14, 15]
    kernel[:, big] = 1.0
    model.get_layer("h1").kernel.assign(kernel)
    plan = structured.channel_plan(model, 0.5, layers=["h1"])
    np.testing.assert_array_equal(plan.kept_channels("h1"), big)
    assert plan.kept_channels("h2") is None


def test_bn_gamma_and_activation_criteria():
    model, x = _model_and_data("conv_chain")
    gamma = np.linspace(0.1, 1.0, 8).astype("float32")
    gamma[0] = 5.0
    model.get_layer("bn1").gamma.assign(gamma)
    plan = structured.channel_plan(
        model, 0.5, criterion="bn_gamma", layers=["c1"]
    )
    np.testing.assert_array_equal(plan.kept_channels("c1"), [0, 5, 6, 7])
    # Activation: a filter whose output is always ~0 is removed first.
    mlp = dense_mlp()
    kernel = mlp.get_layer("h1").kernel.numpy()
    kernel[:, 3] = 0.0
    mlp.get_layer("h1").kernel.assign(kernel)
    mlp.get_layer("h1").bias.assign(np.zeros(16, "float32"))
    xs = np.random.default_rng(0).normal(size=(32, 12)).astype("float32")
    plan = structured.channel_plan(
        mlp, 0.1, criterion="activation", data=xs, layers=["h1"]
    )
    assert 3 not in plan.kept_channels("h1")
    assert len(plan.kept_channels("h1")) == 15


def test_per_layer_ratios_round_to_and_min_channels():
    model, _ = _model_and_data("conv_chain")
    plan = structured.channel_plan(model, layers={"c1": 0.25, "fc": 0.5})
    assert len(plan.kept_channels("c1")) == 6
    assert len(plan.kept_channels("fc")) == 5
    assert plan.kept_channels("c2") is None
    plan = structured.channel_plan(model, 0.6, round_to=4)
    assert len(plan.kept_channels("c1")) == 4  # 8 - 4 = 4
    assert len(plan.kept_channels("c2")) == 4  # 6 - 3 = 3 -> 4
    plan = structured.channel_plan(model, 0.9, min_channels=3)
    assert len(plan.kept_channels("c1")) == 3
    assert len(plan.kept_channels("c2")) == 3


def test_global_scope_removes_the_ratio_of_all_channels():
    model, _ = _model_and_data("conv_chain")
    # c1 gets tiny filters: a global ranking takes most channels from it.
    model.get_layer("c1").kernel.assign(
        model.get_layer("c1").kernel.numpy() * 1e-3
    )
    model.get_layer("c1").kernel.assign(
        model.get_layer("c1").kernel.numpy()
        * np.linspace(1, 8, 8, dtype="float32")
    )
    plan = structured.channel_plan(model, 0.5, scope="global")
    total = 8 + 6 + 10
    kept = sum(len(plan.kept_channels(n)) for n in ("c1", "c2", "fc"))
    assert kept == total - total // 2
    sizes = [len(plan.kept_channels(n)) for n in ("c1", "c2", "fc")]
    assert len(set(sizes)) > 1  # not the same fraction everywhere


def test_plan_applies_to_a_copy_with_the_same_architecture():
    model, x = _model_and_data("residual")
    plan = structured.channel_plan(model, 0.5)
    masked = structured.mask_channels(model, plan)
    small = structured.apply_channel_plan(masked, plan)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-4
    )
    with pytest.raises(ValueError, match="channel_plan"):
        structured.apply_channel_plan(dense_mlp(), plan)
    with pytest.raises(TypeError, match="ChannelPruningPlan"):
        structured.apply_channel_plan(model, {"stem": [0, 1]})


def test_rebuilt_model_saves_and_loads(tmp_path):
    model, x = _model_and_data("separable")
    small = structured.prune_channels(model, 0.5)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6
    )


def test_rebuilt_model_trains():
    model, x = _model_and_data("residual", n=32)
    small = structured.prune_channels(model, 0.5)
    helpers.compile_for_test(small)
    y = np.arange(32) % 4
    history = small.fit(x, y, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, "0.5", True])
def test_bad_ratio_names_the_argument(ratio):
    with pytest.raises(
        ValueError, match=r"`ratio` must be a number in \[0, 1\)"
    ):
        structured.channel_plan(dense_mlp(), ratio)


def test_bad_per_layer_ratio_names_the_layer():
    with pytest.raises(ValueError, match="layer 'h1'.*1.0"):
        structured.channel_plan(dense_mlp(), layers={"h1": 1.0})


def test_removing_every_channel_is_refused():
    with pytest.raises(ValueError, match="every channel"):
        structured.channel_plan(dense_mlp(), 0.5, min_channels=0)


def test_bad_arguments():
    model = dense_mlp()
    with pytest.raises(ValueError, match="criterion"):
        structured.channel_plan(model, 0.5, criterion="random")
    with pytest.raises(ValueError, match="scope"):
        structured.channel_plan(model, 0.5, scope="model")
    with pytest.raises(ValueError, match="data="):
        structured.channel_plan(model, 0.5, criterion="activation")
    with pytest.raises(ValueError, match="scope='layer'"):
        structured.channel_plan(model, 0.5, scope="global", layers={"h1": 0.5})
    with pytest.raises(ValueError, match="'nope'.*not a layer"):
        structured.channel_plan(model, 0.5, layers=["nope"])
    with pytest.raises(ValueError, match="bn_gamma.*h1"):
        structured.channel_plan(model, 0.5, criterion="bn_gamma")


def test_naming_an_output_layer_is_an_error():
    with pytest.raises(ValueError, match="'out'.*model output"):
        structured.channel_plan(dense_mlp(), 0.5, layers=["out"])


def test_unsupported_layer_named_is_an_error():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2DTranspose(4, 3, name="up")(inputs)
    outputs = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'up' \\(Conv2DTranspose\\).*Dense"):
        structured.channel_plan(model, 0.5, layers=["up"])


def test_lambda_between_tied_layers_is_an_error_that_names_it():
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(4, 3, padding="same", name="b")(a)
    b = L.Lambda(lambda t: t * 2.0, name="double")(b)
    x = L.Add()([a, b])
    outputs = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'a'.*Lambda layer 'double'"):
        structured.channel_plan(model, 0.5, layers=["a"])
    # Without naming it, the group is skipped with the reason.
    plan = structured.channel_plan(model, 0.5)
    assert plan.kept_channels("a") is None
    assert "double" in plan.skipped[plan.graph.group_of("a").index]


def test_add_with_a_model_input_leaves_the_group_whole():
    inputs = keras.Input((6,))
    x = L.Dense(6, name="a")(inputs)
    x = L.Add()([inputs, x])
    outputs = L.Dense(2, name="out")(x)
    plan = structured.channel_plan(keras.Model(inputs, outputs), 0.5)
    assert plan.keep == {}
    assert "model input" in plan.skipped[plan.graph.group_of("a").index]


def test_subclassed_model_is_refused_with_advice():
    model, _, _ = helpers.make_model("subclassed")
    with pytest.raises(ValueError, match="subclassed.*Functional"):
        structured.prune_channels(model, 0.5)


def test_gradual_callback_fades_channels_out_before_the_rebuild():
    model, x = _model_and_data("residual", n=32)
    y = np.arange(32) % 4
    plan = structured.channel_plan(model, 0.5)
    callback = structured.GradualChannelPruning(plan, begin_step=0, end_step=8)
    assert callback.factor_at(0) == 1.0
    assert callback.factor_at(4) == pytest.approx(0.5)
    assert callback.factor_at(20) == 0.0
    helpers.compile_for_test(model)
    removed = np.setdiff1d(np.arange(8), plan.kept_channels("stem"))
    # Half way the removed rows are smaller but not yet zero.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[callback])
    half = model.get_layer("branch").kernel.numpy()[:, :, removed, :]
    assert np.all(np.abs(half).max(axis=(0, 1, 3)) > 0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    for name in ("branch", "out"):
        kernel = model.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(kernel[..., removed, :], 0.0)
    small = structured.apply_channel_plan(model, plan)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4
    )


def test_gradual_callback_prunes_a_distillers_student():
    teacher, x = _model_and_data("residual", n=32)
    student, _ = _model_and_data("residual", n=32)
    y = np.arange(32) % 4
    plan = structured.channel_plan(student, 0.5)
    distiller = distillation.Distiller(student, teacher)
    distiller.compile(
        optimizer="adam",
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        ),
    )
    callback = structured.GradualChannelPruning(plan, begin_step=0, end_step=4)
    distiller.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    removed = np.setdiff1d(np.arange(8), plan.kept_channels("stem"))
    kernel = student.get_layer("branch").kernel.numpy()
    np.testing.assert_array_equal(kernel[..., removed, :], 0.0)
    small = structured.apply_channel_plan(student, plan)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-4
    )
    # A plan for a model the Distiller does not contain: say what to do.
    other_plan = structured.channel_plan(_model_and_data("residual")[0], 0.5)
    callback = structured.GradualChannelPruning(other_plan, end_step=2)
    with pytest.raises(ValueError, match="distiller.student"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[callback])


def test_gradual_callback_bad_arguments():
    plan = structured.channel_plan(dense_mlp(), 0.5)
    with pytest.raises(ValueError, match="`end_step` \\(5\\).*`begin_step`"):
        structured.GradualChannelPruning(plan, begin_step=5, end_step=5)
    with pytest.raises(ValueError, match="begin_step"):
        structured.GradualChannelPruning(plan, begin_step=-1)
    with pytest.raises(TypeError, match="ChannelPruningPlan"):
        structured.GradualChannelPruning(None)
    other, x = _model_and_data("residual")
    helpers.compile_for_test(other)
    callback = structured.GradualChannelPruning(plan, end_step=2)
    with pytest.raises(ValueError, match="channel_plan"):
        other.fit(
            x, np.zeros(len(x)), epochs=1, verbose=0, callbacks=[callback]
        )
