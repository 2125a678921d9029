"""Conversion to LiteRT/TFLite, and verification of the converted file.

`to_tflite` turns any Keras 3 model (Sequential, Functional, subclassed)
into a LiteRT flatbuffer in float32, float16, dynamic-range or full-integer
(int8) form, storing pruned weights in LiteRT's sparse format when that
pays. `run_tflite`, `measure_latency`, `file_sizes` and `op_details` run and
inspect the file with the LiteRT interpreter (`pip install
keras-compress[litert]`), and `verify` compares it with the Keras model:
accuracy, agreement, largest output difference, size and latency.

Example:

```python
blob = keras_compress.convert.to_tflite(
    model, "int8", representative_data=x_train[:200], path="model.tflite"
)
print(keras_compress.convert.verify(model, blob, x_test, y_test))
```
"""

from keras_compress.convert.interpreter import OpDetail
from keras_compress.convert.interpreter import file_sizes
from keras_compress.convert.interpreter import measure_latency
from keras_compress.convert.interpreter import op_details
from keras_compress.convert.interpreter import run_tflite
from keras_compress.convert.tflite import kernel_sparsity
from keras_compress.convert.tflite import to_tflite
from keras_compress.convert.verify import VerificationReport
from keras_compress.convert.verify import verify

__all__ = [
    "OpDetail",
    "VerificationReport",
    "file_sizes",
    "kernel_sparsity",
    "measure_latency",
    "op_details",
    "run_tflite",
    "to_tflite",
    "verify",
]
