"""Quantization-aware training for Keras 3, converting to integer LiteRT.

Example:

```python
import keras_compress as kc

qat = kc.quantization.quantize_model(model)        # folds BN, fake-quant
qat.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
qat.fit(x_train, y_train, epochs=2)
blob = kc.convert.to_tflite(qat, "int8")           # integer kernels
```
"""

from keras_compress.quantization.annotate import QuantizeAnnotate
from keras_compress.quantization.annotate import quantize_annotate_layer
from keras_compress.quantization.batch_norm_folding import fold_batch_norm
from keras_compress.quantization.computations import ForwardPass
from keras_compress.quantization.computations import QuantizedComputation
from keras_compress.quantization.computations import (
    register_quantized_computation,
)
from keras_compress.quantization.observers import is_quantization_aware
from keras_compress.quantization.observers import observer_ranges
from keras_compress.quantization.observers import unobserved_quantizers
from keras_compress.quantization.quantize_api import quantize_apply
from keras_compress.quantization.quantize_api import quantize_model
from keras_compress.quantization.quantize_config import LayerQuantizeConfig
from keras_compress.quantization.quantize_config import QuantizeConfig
from keras_compress.quantization.quantize_layer import QuantizeLayer
from keras_compress.quantization.quantized_model import QuantizedModel
from keras_compress.quantization.quantizers import FixedRangeQuantizer
from keras_compress.quantization.quantizers import LastValueQuantizer
from keras_compress.quantization.quantizers import MovingAverageQuantizer
from keras_compress.quantization.quantizers import Quantizer
from keras_compress.quantization.schemes import QuantizeScheme
from keras_compress.quantization.wrapper import QuantizeWrapper

__all__ = [
    "FixedRangeQuantizer",
    "ForwardPass",
    "LastValueQuantizer",
    "LayerQuantizeConfig",
    "MovingAverageQuantizer",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeLayer",
    "QuantizeScheme",
    "QuantizeWrapper",
    "QuantizedComputation",
    "QuantizedModel",
    "Quantizer",
    "fold_batch_norm",
    "is_quantization_aware",
    "observer_ranges",
    "quantize_annotate_layer",
    "quantize_apply",
    "quantize_model",
    "register_quantized_computation",
    "unobserved_quantizers",
]
