"""keras_compress: model optimization for Keras 3.

Submodules:
    pruning: magnitude, block and N:M pruning driven by callbacks; channel
        pruning that rebuilds a smaller model.
    quantization: quantization-aware training to integer LiteRT.
    clustering: weight clustering (parameter sharing), strip, cluster-preserving
        QAT.
    convert: LiteRT/TFLite and ONNX conversion, verification of the file.
    distillation: the Distiller model and distillation losses.
    fusion: fold BatchNormalization into the layer before it, for inference.
    lowrank: SVD factorization of Dense and Conv2D kernels.
    mixed_precision: dtype policies with float32 islands, loss scaling.
    analysis: sparsity, parameter/FLOP and pruning-sensitivity reports.
    pipeline: compress() under an accuracy budget, recipes, reports.
    datasets: offline data loaders.
"""

from keras_compress import analysis
from keras_compress import clustering
from keras_compress import convert
from keras_compress import core
from keras_compress import datasets
from keras_compress import distillation
from keras_compress import fusion
from keras_compress import lowrank
from keras_compress import mixed_precision
from keras_compress import pipeline
from keras_compress import pruning
from keras_compress import quantization
from keras_compress import rewrite
from keras_compress.pipeline import compress

__version__ = "0.1.0"

__all__ = [
    "analysis",
    "clustering",
    "compress",
    "convert",
    "core",
    "datasets",
    "distillation",
    "fusion",
    "lowrank",
    "mixed_precision",
    "pipeline",
    "pruning",
    "quantization",
    "rewrite",
]
