"""Conversion to LiteRT/TFLite and ONNX, and verification of the file.

`to_tflite` turns any Keras 3 model (Sequential, Functional, subclassed)
into a LiteRT flatbuffer in float32, float16, dynamic-range, full-integer
(int8) or 16x8 form, storing pruned weights in LiteRT's sparse format when
that pays. `to_onnx` writes an ONNX model (float32, or float16 inside with
float32 I/O) for ONNX Runtime and its GPU providers (`pip install
keras-compress[onnx]`). `run_tflite`, `measure_latency`, `op_latencies`
(each operator timed alone, summed per Keras layer by `layer_latencies`),
`file_sizes` and `op_details` run and inspect a LiteRT file with the
LiteRT interpreter
(`pip install keras-compress[litert]`); `to_tflite(..., precision=...)`
quantizes chosen layers to int4, int8 or float (`LayerPrecision`) and
`weight_tensors` reads back what each weight tensor of a file holds;
`run_onnx` and
`measure_onnx_latency` do the same for ONNX files with ONNX Runtime. `verify`
compares either kind of file with the Keras model: accuracy, agreement,
output differences, size and latency.

Example:

```python
blob = keras_compress.convert.to_tflite(
    model, "int8", representative_data=x_train[:200], path="model.tflite"
)
print(keras_compress.convert.verify(model, blob, x_test, y_test))
onnx_blob = keras_compress.convert.to_onnx(model, "model.onnx")
print(keras_compress.convert.verify(model, onnx_blob, x_test, y_test))
```
"""

from keras_compress.convert.flatbuffer import WeightTensor
from keras_compress.convert.flatbuffer import weight_tensors
from keras_compress.convert.interpreter import OpDetail
from keras_compress.convert.interpreter import file_sizes
from keras_compress.convert.interpreter import measure_latency
from keras_compress.convert.interpreter import op_details
from keras_compress.convert.interpreter import run_tflite
from keras_compress.convert.layer_precision import LayerPrecision
from keras_compress.convert.onnx import measure_onnx_latency
from keras_compress.convert.onnx import run_onnx
from keras_compress.convert.onnx import to_onnx
from keras_compress.convert.op_latency import OpLatency
from keras_compress.convert.op_latency import layer_latencies
from keras_compress.convert.op_latency import op_latencies
from keras_compress.convert.tflite import kernel_sparsity
from keras_compress.convert.tflite import to_tflite
from keras_compress.convert.verify import VerificationReport
from keras_compress.convert.verify import verify

__all__ = [
    "LayerPrecision",
    "OpDetail",
    "OpLatency",
    "VerificationReport",
    "file_sizes",
    "kernel_sparsity",
    "layer_latencies",
    "measure_latency",
    "measure_onnx_latency",
    "op_details",
    "op_latencies",
    "run_onnx",
    "run_tflite",
    "to_onnx",
    "to_tflite",
    "verify",
    "weight_tensors",
    "WeightTensor",
]
