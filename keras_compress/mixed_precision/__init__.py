"""Mixed precision for Keras 3 models, over Keras's dtype policies.

Set a policy globally (`set_global_policy`, `policy_scope`), or get a copy of
a trained model under a policy with the sensitive layers kept in float32
(`apply_policy`); `"auto"` picks bfloat16 or float16 from the device. For
float16, `loss_scale_optimizer` adds Keras's `LossScaleOptimizer`. Before
conversion to LiteRT, `to_float32` gives a float32 copy.

Example:

```python
import keras_compress as kc

mixed = kc.mixed_precision.apply_policy(model, "mixed_bfloat16")
mixed.compile(optimizer="adam", loss=...)
mixed.fit(x, y)
blob = kc.convert.to_tflite(kc.mixed_precision.to_float32(mixed))
```
"""

from keras_compress.mixed_precision.loss_scaling import loss_scale_optimizer
from keras_compress.mixed_precision.loss_scaling import needs_loss_scaling
from keras_compress.mixed_precision.model_policy import apply_policy
from keras_compress.mixed_precision.model_policy import default_float32_layers
from keras_compress.mixed_precision.model_policy import get_layer_policies
from keras_compress.mixed_precision.model_policy import to_float32
from keras_compress.mixed_precision.policy import POLICIES
from keras_compress.mixed_precision.policy import VALID_POLICIES
from keras_compress.mixed_precision.policy import cpu_supports_bfloat16
from keras_compress.mixed_precision.policy import detect_accelerator
from keras_compress.mixed_precision.policy import global_policy
from keras_compress.mixed_precision.policy import policy_scope
from keras_compress.mixed_precision.policy import resolve_policy
from keras_compress.mixed_precision.policy import set_global_policy

__all__ = [
    "POLICIES",
    "VALID_POLICIES",
    "apply_policy",
    "cpu_supports_bfloat16",
    "default_float32_layers",
    "detect_accelerator",
    "get_layer_policies",
    "global_policy",
    "loss_scale_optimizer",
    "needs_loss_scaling",
    "policy_scope",
    "resolve_policy",
    "set_global_policy",
    "to_float32",
]
