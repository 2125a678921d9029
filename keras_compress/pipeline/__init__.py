"""`compress()`: a recipe of techniques under an accuracy budget.

`compress(model, train_data, val_data, target=..., max_accuracy_drop=...)`
prunes (per-layer sparsities from a sensitivity scan), fine-tunes with
distillation from the original, trains quantization-aware for integer
targets, converts, verifies the file and backs off until the budget holds.
Recipes are plain lists of steps (`Prune`, `PruneChannels`, `Cluster`,
`QuantizeAware`, `QuantizePostTraining`) that can be written as JSON or YAML.
"""

from keras_compress.pipeline.compress import CompressionResult
from keras_compress.pipeline.compress import compress
from keras_compress.pipeline.recipe import Recipe
from keras_compress.pipeline.recipe import load_recipe
from keras_compress.pipeline.report import CompressionReport
from keras_compress.pipeline.report import StageResult
from keras_compress.pipeline.steps import STEPS
from keras_compress.pipeline.steps import Cluster
from keras_compress.pipeline.steps import Prune
from keras_compress.pipeline.steps import PruneChannels
from keras_compress.pipeline.steps import QuantizeAware
from keras_compress.pipeline.steps import QuantizePostTraining
from keras_compress.pipeline.steps import Step
from keras_compress.pipeline.targets import TARGETS

__all__ = [
    "Cluster",
    "CompressionReport",
    "CompressionResult",
    "Prune",
    "PruneChannels",
    "QuantizeAware",
    "QuantizePostTraining",
    "Recipe",
    "STEPS",
    "StageResult",
    "Step",
    "TARGETS",
    "compress",
    "load_recipe",
]
