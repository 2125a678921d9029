"""keras_compress: model optimization for Keras 3.

Submodules:
    pruning: magnitude, block and N:M pruning driven by callbacks.
    quantization: quantization-aware training to integer LiteRT.
    convert: LiteRT/TFLite and ONNX conversion, verification of the file.
    distillation: the Distiller model and distillation losses.
    mixed_precision: dtype policies with float32 islands, loss scaling.
    analysis: sparsity and size reports.
    datasets: offline data loaders.
"""

from keras_compress import analysis
from keras_compress import convert
from keras_compress import datasets
from keras_compress import distillation
from keras_compress import mixed_precision
from keras_compress import pruning
from keras_compress import quantization
from keras_compress import rewrite

__version__ = "0.1.0"

__all__ = [
    "analysis",
    "convert",
    "datasets",
    "distillation",
    "mixed_precision",
    "pruning",
    "quantization",
    "rewrite",
]
