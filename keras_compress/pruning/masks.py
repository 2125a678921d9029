"""Mask computation: magnitude, block and N:M sparsity.

Every function takes a weight tensor and returns a mask of the same shape and
dtype holding only 0 and 1. They use `keras.ops` only, so they run on any
Keras backend. Ranks (an argsort of an argsort) are used instead of a
threshold, so exactly the requested number of weights is pruned even when
magnitudes tie (as they do once pruned weights are zero).
"""

import keras
from keras import ops

from keras_compress.pruning.schedules import number_to_prune


def _keep_largest(scores, num_pruned):
    """1 where `scores` (1-D) is not among the `num_pruned` smallest."""
    ranks = ops.argsort(ops.argsort(scores))
    return ops.cast(ops.greater_equal(ranks, num_pruned), "float32")


def magnitude_mask(weight, sparsity):
    """Zeros the `sparsity` fraction of `weight` with the smallest |value|.

    Args:
        weight: A tensor of any shape.
        sparsity: Fraction to prune, in [0, 1).

    Returns:
        A 0/1 tensor with the shape and dtype of `weight`.

    Example:

    >>> mask = magnitude_mask(np.array([[0.1, -3.0], [2.0, 0.5]]), 0.5)
    >>> # [[0., 1.], [1., 0.]]
    """
    weight = ops.convert_to_tensor(weight)
    size = int(ops.size(weight))
    num_pruned = number_to_prune(sparsity, size)
    flat = ops.reshape(ops.abs(weight), (-1,))
    mask = _keep_largest(ops.cast(flat, "float32"), num_pruned)
    return ops.cast(ops.reshape(mask, ops.shape(weight)), weight.dtype)


def block_mask(weight, sparsity, block_size, pooling="AVG"):
    """Prunes whole blocks of a weight seen as a 2-D matrix.

    The weight is viewed as `(prod(shape[:-1]), shape[-1])`, cut into blocks
    of `block_size` (the last row/column of blocks may be partial), each block
    scored by the mean (`"AVG"`) or max (`"MAX"`) of |value|, and the lowest
    scoring `sparsity` fraction of blocks is zeroed. Blocks map onto SIMD
    lanes of sparse kernels, which is what makes them faster than scattered
    zeros.

    Args:
        weight: A tensor of rank >= 2.
        sparsity: Fraction of blocks to prune, in [0, 1).
        block_size: `(rows, cols)` of a block.
        pooling: `"AVG"` or `"MAX"`.

    Returns:
        A 0/1 tensor with the shape and dtype of `weight`.
    """
    weight = ops.convert_to_tensor(weight)
    shape = tuple(weight.shape)
    rows, cols = block_size
    matrix = ops.abs(ops.reshape(ops.cast(weight, "float32"), (-1, shape[-1])))
    height, width = matrix.shape
    pad_h, pad_w = -height % rows, -width % cols
    padded = ops.pad(matrix, ((0, pad_h), (0, pad_w)))
    blocks = ops.reshape(
        padded, ((height + pad_h) // rows, rows, (width + pad_w) // cols, cols)
    )
    if pooling == "MAX":
        scores = ops.max(blocks, axis=(1, 3))
    else:
        # Padding zeros would drag the mean of a partial block down; divide
        # by the number of real entries instead.
        ones = ops.pad(ops.ones_like(matrix), ((0, pad_h), (0, pad_w)))
        counts = ops.sum(ops.reshape(ones, blocks.shape), axis=(1, 3))
        scores = ops.sum(blocks, axis=(1, 3)) / counts
    num_pruned = number_to_prune(sparsity, int(ops.size(scores)))
    block_keep = ops.reshape(
        _keep_largest(ops.reshape(scores, (-1,)), num_pruned), scores.shape
    )
    mask = ops.repeat(ops.repeat(block_keep, rows, axis=0), cols, axis=1)
    mask = mask[:height, :width]
    return ops.cast(ops.reshape(mask, shape), weight.dtype)


def n_m_mask(weight, n, m, axis=-2):
    """Keeps the `n` largest of every `m` consecutive weights along `axis`.

    With `(n, m) = (2, 4)` along the input-channel axis this is the 2:4
    pattern that sparse tensor cores and XNNPack accelerate. For a Dense
    kernel `(in, out)` and a Conv kernel `(..., in, out)` the input channels
    are `axis=-2`.

    Args:
        weight: A tensor whose size along `axis` is a multiple of `m`.
        n: Weights kept per group.
        m: Group size.
        axis: Axis along which groups are formed.

    Returns:
        A 0/1 tensor with the shape and dtype of `weight`.
    """
    weight = ops.convert_to_tensor(weight)
    moved = ops.moveaxis(ops.abs(ops.cast(weight, "float32")), axis, -1)
    moved_shape = tuple(moved.shape)
    if moved_shape[-1] % m:
        raise ValueError(
            f"N:M sparsity needs the size of axis {axis} ({moved_shape[-1]}) "
            f"to be a multiple of m={m}."
        )
    groups = ops.reshape(moved, (-1, m))
    ranks = ops.argsort(ops.argsort(groups, axis=-1), axis=-1)
    keep = ops.cast(ops.greater_equal(ranks, m - n), "float32")
    mask = ops.moveaxis(ops.reshape(keep, moved_shape), -1, axis)
    return ops.cast(mask, weight.dtype)


def sparsity_of(weight):
    """Fraction of exact zeros in `weight`, as a Python float."""
    weight = ops.convert_to_tensor(weight)
    zeros = ops.sum(ops.cast(ops.equal(weight, 0), "int32"))
    return float(keras.ops.convert_to_numpy(zeros)) / max(
        1, int(ops.size(weight))
    )
