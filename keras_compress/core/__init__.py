"""The compression core: what pruning, clustering and quantization share.

- `CompressionWrapper` (`wrapper.py`): the base of every layer wrapper:
  builds the wrapped layer from its real call, runs it with other values
  for some variables on every backend, serializes its build config.
- `OwningModel` (`owning_model.py`): a technique applied to a subclassed
  model, whose layers cannot be swapped: layer calls routed through
  wrappers, recorded by position. `OwningModel.wrap_layers` and
  `strip_layers` are the one driver that applies a technique's wrapper to
  any kind of model (graph models get wrappers, subclassed models and
  custom blocks an owning model) and strips it again.
- `stateless.py`: "run the layer's own code with these values", and the
  call routing.
- `constraints.py`: projections that keep a weight on its pattern (masks,
  clusters), after each optimizer step where the backend allows it, in the
  forward pass on JAX.
- `state.py`: `compression_state(layer)`.
- `batch_norm.py`: the one rule for which BatchNormalization folds into
  which layer (used by `fold_batch_norms` and QAT).
- `keras_private.py`: every use of private Keras API.

The techniques are clients: they say what to compute, not how to thread it
through a model.
"""

from keras_compress.core.constraints import MaskConstraint
from keras_compress.core.constraints import WeightConstraint
from keras_compress.core.constraints import add_mask
from keras_compress.core.constraints import install_constraint
from keras_compress.core.owning_model import OwningModel
from keras_compress.core.state import CompressionState
from keras_compress.core.state import compression_state
from keras_compress.core.wrapper import CompressionWrapper

__all__ = [
    "CompressionState",
    "CompressionWrapper",
    "MaskConstraint",
    "OwningModel",
    "WeightConstraint",
    "add_mask",
    "compression_state",
    "install_constraint",
]
