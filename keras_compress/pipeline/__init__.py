"""`compress()`: techniques in a recipe, under accuracy, size, latency budgets.

`compress(model, train_data, val_data, target=..., max_accuracy_drop=...)`
prunes (per-layer sparsities from a sensitivity scan), fine-tunes with
distillation from the original, trains quantization-aware for integer
targets, converts, verifies the file and backs off until the budget holds.
With `max_bytes=` / `max_latency=` it searches per-layer channels and 4-bit
weights on measured files instead (`search`; budgets are read by `budgets`).
Recipes are plain lists of steps (`Prune`, `PruneChannels`, `Cluster`,
`QuantizeAware`, `QuantizePostTraining`) that can be written as JSON or YAML.
"""

from keras_compress.pipeline import budgets
from keras_compress.pipeline import search
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
    "budgets",
    "compress",
    "load_recipe",
    "search",
]
