"""Recurrent layers going into the LiteRT converter.

Keras 3's `LSTM`, `GRU` and `SimpleRNN` run their time loop as a
`tf.while_loop` over a `TensorArray`. The converter cannot lower its
`TensorListReserve` while the batch size is dynamic ("requires
element_shape to be static"), and it does not fuse Keras 3's loop into
LiteRT's `UNIDIRECTIONAL_SEQUENCE_LSTM` as it did for `tf.keras`. With a
known sequence length the loop can be unrolled instead: the same math as
plain MatMul/Add/Logistic/Tanh ops, which every LiteRT runtime has in
float and in int8, with a dynamic batch size. This is Keras's own
`unroll=True`, set only while the model is traced for export.
"""

import contextlib

import keras

from keras_compress.core import keras_private


def sequence_length(layer):
    """The number of time steps `layer` was built for, or `None`."""
    config = layer.get_build_config() or {}
    shape = config.get("input_shape")
    if shape is None:
        shape = (config.get("shapes_dict") or {}).get("sequences_shape")
    if not shape or len(shape) < 2:
        return None
    return shape[0] if getattr(layer, "time_major", False) else shape[1]


def recurrent_layers(model):
    """Every `keras.layers.RNN` (LSTM, GRU, ...) inside `model`."""
    return [
        layer
        for layer in keras_private.flatten_layers(model, include_self=True)
        if isinstance(layer, keras.layers.RNN)
    ]


@contextlib.contextmanager
def unrolled(model):
    """Unrolls, while the context is open, every recurrent layer of `model`
    with a known sequence length.

    The layers are restored on exit, also on errors: the user's model is
    unchanged afterwards.

    Args:
        model: A built `keras.Model`.

    Yields:
        The recurrent layers left rolled (unknown sequence length): their
        loop will not convert without `allow_select_tf_ops=True`.
    """
    changed = []
    rolled = []
    try:
        for layer in recurrent_layers(model):
            if layer.unroll:
                continue
            if sequence_length(layer) is None:
                rolled.append(layer)
                continue
            layer.unroll = True
            changed.append(layer)
        yield rolled
    finally:
        for layer in changed:
            layer.unroll = False
