"""Reports on models: sparsity, parameters and FLOPs per layer, pruning,
channel and precision sensitivity per layer."""

from keras_compress.analysis.profile import LayerProfile
from keras_compress.analysis.profile import ModelProfile
from keras_compress.analysis.profile import compare_profiles
from keras_compress.analysis.profile import profile
from keras_compress.analysis.sensitivity import LayerSensitivity
from keras_compress.analysis.sensitivity import SensitivityReport
from keras_compress.analysis.sensitivity import channel_sensitivity
from keras_compress.analysis.sensitivity import precision_sensitivity
from keras_compress.analysis.sensitivity import pruning_sensitivity
from keras_compress.analysis.sparsity import SparsityReport
from keras_compress.analysis.sparsity import sparsity_report

__all__ = [
    "LayerProfile",
    "LayerSensitivity",
    "ModelProfile",
    "SensitivityReport",
    "SparsityReport",
    "channel_sensitivity",
    "compare_profiles",
    "precision_sensitivity",
    "profile",
    "pruning_sensitivity",
    "sparsity_report",
]
