"""`compression_state(layer)`: what is applied to a layer, by any technique.

One technique needs to know what another did (QAT keeps the zeros of a
pruned layer, the converter reads clusters and masks); asking here instead
of `isinstance`-checking the other technique's wrappers keeps the
techniques independent of each other.
"""

import dataclasses

from keras_compress.core import stateless
from keras_compress.core import wrapper as wrapper_lib


@dataclasses.dataclass(frozen=True)
class CompressionState:
    """What is applied to one layer.

    Attributes:
        techniques: The techniques applied, e.g. `("pruning",)`.
        wrapper: The `CompressionWrapper` applying the last of them, or None.
        layer: The plain layer underneath.
    """

    techniques: tuple
    wrapper: object
    layer: object

    @property
    def pruned(self):
        return "pruning" in self.techniques

    @property
    def clustered(self):
        return "clustering" in self.techniques

    @property
    def quantized(self):
        return "quantization" in self.techniques


def compression_state(layer):
    """Returns the `CompressionState` of `layer`.

    Args:
        layer: A wrapper, a plain layer, or a layer of a subclassed model
            whose call an owning model routes through a wrapper.

    Returns:
        A `CompressionState`; `techniques` is empty for a plain layer.
    """
    wrapper = None
    if isinstance(layer, wrapper_lib.CompressionWrapper):
        wrapper = layer
    elif stateless.is_routed(layer):
        wrapper = getattr(layer.call, "wrapper", None)
    techniques = []
    current = wrapper
    inner = layer
    while isinstance(current, wrapper_lib.CompressionWrapper):
        techniques.insert(0, current.technique)
        inner = current.layer
        current = inner
    return CompressionState(tuple(techniques), wrapper, inner)
