"""Real architectures for the zoo: `keras.applications` networks.

Built with `weights=None` (nothing is downloaded) at a small input size
(32x32x3, the smallest most of them accept) and a 10-class head that
returns logits, so that a cell trains a few steps in seconds. The
architecture is the network's own: hard-swish and squeeze-excite blocks,
`Rescaling`/`Normalization` inside the model, stochastic depth,
LayerNorm + GELU, Concatenate-heavy dense blocks.
"""

import keras
import numpy as np

NUM_CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
NUM_SAMPLES = 32

_APPLICATIONS = keras.applications


def _common(**kwargs):
    return dict(
        input_shape=INPUT_SHAPE,
        weights=None,
        classes=NUM_CLASSES,
        classifier_activation=None,
        **kwargs,
    )


_BUILDERS = {
    "MobileNetV2": lambda: _APPLICATIONS.MobileNetV2(**_common(alpha=0.35)),
    "MobileNetV3Small": lambda: _APPLICATIONS.MobileNetV3Small(
        **_common(alpha=0.75)
    ),
    "EfficientNetV2B0": lambda: _APPLICATIONS.EfficientNetV2B0(**_common()),
    "ResNet50V2": lambda: _APPLICATIONS.ResNet50V2(**_common()),
    "DenseNet121": lambda: _APPLICATIONS.DenseNet121(**_common()),
    "ConvNeXtTiny": lambda: _APPLICATIONS.ConvNeXtTiny(**_common()),
}
ARCHITECTURES = tuple(_BUILDERS)


def build(name):
    """`(model, x, y)`: the architecture, 32 images in [0, 255] (what the
    networks' own preprocessing expects) and 32 labels."""
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown architecture {name!r}; expected one of {ARCHITECTURES}."
        )
    keras.utils.set_random_seed(0)
    model = _BUILDERS[name]()
    x, y = _data(np.random.default_rng(0), NUM_SAMPLES)
    return model, x, y


def probe_inputs(n=64):
    """More inputs of the same distribution (another seed)."""
    x, _ = _data(np.random.default_rng(1), n)
    return x


def _data(rng, n):
    x = rng.uniform(0, 255, size=(n, *INPUT_SHAPE)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=n)
    return x, y
