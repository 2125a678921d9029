"""Reports on models: sparsity, parameter counts and sizes."""

from keras_compress.analysis.sparsity import SparsityReport
from keras_compress.analysis.sparsity import sparsity_report

__all__ = ["SparsityReport", "sparsity_report"]
