import numpy as np
import pytest

from keras_compress import pruning


def test_magnitude_mask_prunes_smallest_exactly():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(30, 20)).astype("float32")
    mask = np.asarray(pruning.magnitude_mask(weight, 0.75))
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert int((mask == 0).sum()) == 450
    kept = np.abs(weight[mask == 1])
    pruned = np.abs(weight[mask == 0])
    assert kept.min() >= pruned.max()


def test_magnitude_mask_exact_count_with_ties():
    # Already-pruned zeros tie; the count must still be exact.
    weight = np.zeros((10, 10), "float32")
    weight[0, :5] = [1, 2, 3, 4, 5]
    mask = np.asarray(pruning.magnitude_mask(weight, 0.5))
    assert int((mask == 0).sum()) == 50
    assert mask[0, :5].tolist() == [1, 1, 1, 1, 1]


def test_magnitude_mask_rounds_down():
    weight = np.arange(1, 8, dtype="float32")  # 7 weights
    mask = np.asarray(pruning.magnitude_mask(weight, 0.5))
    assert mask.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_block_mask_zeros_whole_blocks():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(8, 6)).astype("float32")
    mask = np.asarray(pruning.block_mask(weight, 0.5, (2, 3)))
    assert (mask == 0).sum() == 24
    blocks = mask.reshape(4, 2, 2, 3).transpose(0, 2, 1, 3).reshape(8, 6)
    for block in blocks:
        assert len(set(block.tolist())) == 1  # a block is all 0 or all 1


def test_block_mask_scores_by_average_magnitude():
    weight = np.ones((4, 4), "float32")
    weight[:2, :2] = 0.1  # the weakest 2x2 block
    mask = np.asarray(pruning.block_mask(weight, 0.25, (2, 2)))
    assert mask[:2, :2].sum() == 0 and mask.sum() == 12


def test_block_mask_partial_blocks_and_conv_kernel():
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(3, 3, 5, 7)).astype("float32")
    mask = np.asarray(pruning.block_mask(weight, 0.5, (4, 4)))
    assert mask.shape == weight.shape
    assert 0.3 < (mask == 0).mean() < 0.7


@pytest.mark.parametrize("shape", [(16, 8), (3, 3, 8, 4)])
def test_n_m_mask_keeps_n_largest_in_each_group(shape):
    rng = np.random.default_rng(3)
    weight = rng.normal(size=shape).astype("float32")
    mask = np.asarray(pruning.n_m_mask(weight, 2, 4))
    groups = np.moveaxis(mask, -2, -1).reshape(-1, 4)
    values = np.moveaxis(np.abs(weight), -2, -1).reshape(-1, 4)
    assert (groups.sum(axis=1) == 2).all()
    for keep, value in zip(groups, values):
        assert value[keep == 1].min() >= value[keep == 0].max()


def test_n_m_mask_rejects_indivisible_axis():
    with pytest.raises(ValueError, match="multiple of m=4"):
        pruning.n_m_mask(np.ones((6, 3), "float32"), 2, 4)


def test_two_four_runs_along_the_axis_attention_sums_over():
    # Query kernel (in=16, heads=4, head_dim=8): the pattern runs along
    # axis 0 (the 16 inputs), not the 4 heads; output kernel (4, 8, 16)
    # along head_dim, the innermost summed axis.
    import keras

    attention = keras.layers.MultiHeadAttention(4, 8, name="mha")
    attention.build((None, 5, 16), (None, 5, 16))
    axes = {
        sub.name: pruning.input_channel_axis(attention, sub.kernel)
        for sub in (attention.query_dense, attention.output_dense)
    }
    assert axes == {"query": -3, "attention_output": -2}
    dense = keras.layers.Dense(3)
    dense.build((None, 8))
    assert pruning.input_channel_axis(dense, dense.kernel) == -2

    inputs = keras.Input((5, 16))
    model = keras.Model(inputs, attention(inputs, inputs))
    pruned = pruning.prune_low_magnitude(
        model,
        pruning_schedule=pruning.ConstantSparsity(0.5, 0, frequency=1),
        sparsity_m_by_n=(2, 4),
    )
    for pruner in pruning.get_pruners(pruned):
        pruner.update_masks(0.5)
    stripped = pruning.strip_pruning(pruned)
    layer = stripped.get_layer("mha")
    for sub in (layer.query_dense, layer.output_dense):
        axis = pruning.input_channel_axis(layer, sub.kernel)
        values = np.moveaxis(np.asarray(sub.kernel), axis, -1)
        groups = np.count_nonzero(values.reshape(-1, 4), axis=1)
        assert np.all(groups == 2), sub.name
