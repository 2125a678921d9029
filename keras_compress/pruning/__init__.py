"""Magnitude pruning for Keras 3: schedules, wrappers, callbacks and strip.

Example:

```python
import keras_compress as kc

pruned = kc.pruning.prune_low_magnitude(
    model, pruning_schedule=kc.pruning.PolynomialDecay(0.0, 0.8, 0, 1000))
pruned.compile(...)
pruned.fit(x, y, callbacks=[kc.pruning.UpdatePruningStep()])
small = kc.pruning.strip_pruning(pruned)
```
"""

from keras_compress.pruning.callbacks import PruningSummaries
from keras_compress.pruning.callbacks import UpdatePruningStep
from keras_compress.pruning.masks import block_mask
from keras_compress.pruning.masks import magnitude_mask
from keras_compress.pruning.masks import n_m_mask
from keras_compress.pruning.prune_api import get_pruners
from keras_compress.pruning.prune_api import prune_low_magnitude
from keras_compress.pruning.prune_api import strip_pruning
from keras_compress.pruning.pruned_model import PrunedModel
from keras_compress.pruning.registry import get_prunable_weights
from keras_compress.pruning.registry import input_channel_axis
from keras_compress.pruning.registry import is_prunable
from keras_compress.pruning.schedules import ConstantSparsity
from keras_compress.pruning.schedules import PolynomialDecay
from keras_compress.pruning.schedules import PruningSchedule
from keras_compress.pruning.structured import ChannelPruningPlan
from keras_compress.pruning.structured import GradualChannelPruning
from keras_compress.pruning.structured import apply_channel_plan
from keras_compress.pruning.structured import channel_plan
from keras_compress.pruning.structured import mask_channels
from keras_compress.pruning.structured import prune_channels
from keras_compress.pruning.wrapper import PruneLowMagnitude

__all__ = [
    "ChannelPruningPlan",
    "ConstantSparsity",
    "GradualChannelPruning",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "PrunedModel",
    "PruningSchedule",
    "PruningSummaries",
    "UpdatePruningStep",
    "apply_channel_plan",
    "block_mask",
    "channel_plan",
    "get_prunable_weights",
    "input_channel_axis",
    "get_pruners",
    "is_prunable",
    "magnitude_mask",
    "mask_channels",
    "n_m_mask",
    "prune_channels",
    "prune_low_magnitude",
    "strip_pruning",
]
