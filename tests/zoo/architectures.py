"""Real architectures for the zoo: `keras.applications` networks and
KerasHub backbones.

The `keras.applications` networks are built with `weights=None` (nothing
is downloaded) at a small input size (32x32x3, the smallest most of them
accept) and a 10-class head that returns logits, so that a cell trains a
few steps in seconds. The architecture is the network's own: hard-swish
and squeeze-excite blocks, `Rescaling`/`Normalization` inside the model,
stochastic depth, LayerNorm + GELU, Concatenate-heavy dense blocks.

The KerasHub models are built from explicit small configs (2 layers,
2 heads, width 32; no preset, nothing downloaded) with the head KerasHub's
own task models put on them: a BERT classifier (the pooled output into a
Dense), a GPT-2 causal LM (the tied token embedding, reversed, as the
head) and a DINOv2 ViT classifier (the class token into a Dense). Their
Transformer blocks are custom layers made of layers, which the techniques
open up (`keras_compress.rewrite.opens_up`); their inputs are dicts of
token ids and masks (text) or normalized images.
"""

import keras
import numpy as np

NUM_CLASSES = 10
INPUT_SHAPE = (32, 32, 3)
NUM_SAMPLES = 32
SEQUENCE_LENGTH = 16
VOCABULARY_SIZE = 128

_APPLICATIONS = keras.applications


def _common(**kwargs):
    return dict(
        input_shape=INPUT_SHAPE,
        weights=None,
        classes=NUM_CLASSES,
        classifier_activation=None,
        **kwargs,
    )


# Small Transformer sizes shared by the KerasHub models.
_TRANSFORMER = dict(num_layers=2, num_heads=2, hidden_dim=32)


def _bert_classifier():
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY_SIZE,
        intermediate_dim=64,
        max_sequence_length=SEQUENCE_LENGTH,
        dropout=0.0,
        **_TRANSFORMER,
    )
    pooled = backbone(backbone.input)["pooled_output"]
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(pooled)
    return keras.Model(backbone.input, logits, name="bert_classifier")


def _gpt2_causal_lm():
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY_SIZE,
        intermediate_dim=64,
        max_sequence_length=SEQUENCE_LENGTH,
        dropout=0.0,
        **_TRANSFORMER,
    )
    # As GPT2CausalLM computes its logits: the token embedding, reversed.
    hidden = backbone(backbone.input)
    logits = backbone.token_embedding(hidden, reverse=True)
    return keras.Model(backbone.input, logits, name="gpt2_causal_lm")


def _dinov2_classifier():
    import keras_hub

    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=8,
        intermediate_dim=64,
        image_shape=INPUT_SHAPE,
        position_embedding_shape=INPUT_SHAPE,
        use_mask_token=False,
        **_TRANSFORMER,
    )
    class_token = backbone(backbone.input)[:, 0]
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(class_token)
    return keras.Model(backbone.input, logits, name="dinov2_classifier")


def _images(rng, n):
    # What keras.applications' own preprocessing expects: [0, 255].
    x = rng.uniform(0, 255, size=(n, *INPUT_SHAPE)).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, size=n)


def _normalized_images(rng, n):
    # What KerasHub's image converter hands DINOv2: normalized pixels.
    x = rng.normal(size=(n, *INPUT_SHAPE)).astype("float32")
    return x, rng.integers(0, NUM_CLASSES, size=n)


def _token_ids(rng, n):
    return rng.integers(1, VOCABULARY_SIZE, size=(n, SEQUENCE_LENGTH))


def _sentences(rng, n):
    ids = _token_ids(rng, n)
    x = {
        "token_ids": ids.astype("int32"),
        "segment_ids": np.zeros_like(ids, "int32"),
        "padding_mask": np.ones_like(ids, "int32"),
    }
    return x, rng.integers(0, NUM_CLASSES, size=n)


def _next_tokens(rng, n):
    ids = _token_ids(rng, n)
    x = {
        "token_ids": ids.astype("int32"),
        "padding_mask": np.ones_like(ids, "int32"),
    }
    return x, np.roll(ids, -1, axis=1)  # each position predicts the next


# name -> (builder, data(rng, n) -> (x, y))
_ARCHITECTURES = {
    "MobileNetV2": (
        lambda: _APPLICATIONS.MobileNetV2(**_common(alpha=0.35)),
        _images,
    ),
    "MobileNetV3Small": (
        lambda: _APPLICATIONS.MobileNetV3Small(**_common(alpha=0.75)),
        _images,
    ),
    "EfficientNetV2B0": (
        lambda: _APPLICATIONS.EfficientNetV2B0(**_common()),
        _images,
    ),
    "ResNet50V2": (lambda: _APPLICATIONS.ResNet50V2(**_common()), _images),
    "DenseNet121": (lambda: _APPLICATIONS.DenseNet121(**_common()), _images),
    "ConvNeXtTiny": (
        lambda: _APPLICATIONS.ConvNeXtTiny(**_common()),
        _images,
    ),
    "BERT": (_bert_classifier, _sentences),
    "GPT2": (_gpt2_causal_lm, _next_tokens),
    "DINOv2": (_dinov2_classifier, _normalized_images),
}
ARCHITECTURES = tuple(_ARCHITECTURES)
KERAS_HUB = ("BERT", "GPT2", "DINOv2")


def build(name):
    """`(model, x, y)`: the architecture, 32 inputs of the distribution it
    expects (images in [0, 255] for keras.applications, normalized images
    or token ids for KerasHub) and 32 labels (next tokens for the LM)."""
    if name not in _ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture {name!r}; expected one of {ARCHITECTURES}."
        )
    builder, data = _ARCHITECTURES[name]
    keras.utils.set_random_seed(0)
    model = builder()
    x, y = data(np.random.default_rng(0), NUM_SAMPLES)
    return model, x, y


def probe_inputs(name, n=64):
    """More inputs of the same distribution (another seed)."""
    _, data = _ARCHITECTURES[name]
    x, _ = data(np.random.default_rng(1), n)
    return x
