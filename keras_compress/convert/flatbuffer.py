"""What a LiteRT file stores: its weight tensors, their types and sizes.

The interpreter reports a 4-bit tensor as int8 (NumPy has no int4), so
the precision actually in a file is read here from the flatbuffer itself,
with `ai_edge_litert`'s own schema and reader.
"""

import collections
import dataclasses
import json

from keras_compress.convert import _files

# Operators whose constant input is a weight a precision choice applies to.
WEIGHT_OPS = (
    "BATCH_MATMUL",
    "CONV_2D",
    "CONV_3D",
    "DEPTHWISE_CONV_2D",
    "EMBEDDING_LOOKUP",
    "FULLY_CONNECTED",
    "GATHER",
    "TRANSPOSE_CONV",
)
# Metadata entry in which `to_tflite(precision=...)` records, per operator,
# the Keras layer it came from.
LAYERS_METADATA = "keras_compress.layers"


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    """One weight tensor of a LiteRT file, as stored.

    Attributes:
        op_index: Position of the operator that reads it in the execution
            plan of the main subgraph.
        op_name: That operator's builtin name, e.g. `"CONV_2D"`.
        tensor_name: The tensor's name in the file.
        dtype: The stored type: `"int4"`, `"int8"`, `"int2"`, `"float16"`,
            `"float32"`, ...
        shape: The tensor's shape.
        granularity: `"tensor"`, `"channel"` or `"block<N>"` for a
            quantized tensor (one scale per tensor, per output channel, or
            per block of N values); `None` for a float one.
        compute: How the operator computes: `"integer"` (integer
            activations and kernels), `"dynamic"` (float activations
            quantized on the fly by the kernel) or `"float"` (the weight is
            dequantized first, or is float).
        num_bytes: Bytes the tensor's data takes in the file.
        layer: Path of the Keras layer the operator came from, where the
            file records it (files written with `to_tflite(precision=...)`),
            else `None`.
    """

    op_index: int
    op_name: str
    tensor_name: str
    dtype: str
    shape: tuple
    granularity: str | None
    compute: str
    num_bytes: int
    layer: str | None = None

    @property
    def precision(self):
        """Short form for reports, e.g. `"int4 (channel, integer)"`."""
        if self.granularity is None:
            return self.dtype
        return f"{self.dtype} ({self.granularity}, {self.compute})"


def weight_tensors(model_content):
    """Lists the weight tensors of a LiteRT file with their stored types.

    Each operator that reads a constant weight (convolutions, fully
    connected, batch matmul, embedding lookups) contributes one entry. A
    weight behind a `DEQUANTIZE` op (weight-only quantization, float16
    files) is reported with its stored type and `compute="float"`.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.

    Returns:
        A list of `WeightTensor`, in execution order.

    Example:

    ```python
    for tensor in weight_tensors(blob):
        print(tensor.op_name, tensor.layer, tensor.precision, tensor.num_bytes)
    ```
    """
    model = read_model(model_content)
    layers = layer_map(model)
    graph = model.subgraphs[0]
    result = []
    for index, op, tensor_index, dequantized in weight_ops(model):
        tensor = graph.tensors[tensor_index]
        dtype = type_name(tensor.type)
        if dtype.startswith(("int", "uint")) and not dequantized:
            integer = _output_type(graph, op).startswith(("int", "uint"))
            compute = "integer" if integer else "dynamic"
        else:
            compute = "float"
        result.append(
            WeightTensor(
                op_index=index,
                op_name=op_name(model, op),
                tensor_name=_decode(tensor.name),
                dtype=dtype,
                shape=tuple(int(d) for d in tensor.shape),
                granularity=_granularity(tensor),
                compute=compute,
                num_bytes=_buffer_bytes(model, tensor),
                layer=layers.get(index),
            )
        )
    return result


def describe(weights):
    """One line for reports: count and bytes per stored precision.

    Args:
        weights: `WeightTensor`s (e.g. from `weight_tensors`), or `None`.

    Returns:
        E.g. `"3 int4 (channel, integer) (57,416 bytes), 1 float32 (...)"`.
    """
    if weights is None:
        return "n/a"
    if not weights:
        return "none"
    counts = collections.Counter()
    sizes = collections.Counter()
    for tensor in weights:
        counts[tensor.precision] += 1
        sizes[tensor.precision] += tensor.num_bytes
    return ", ".join(
        f"{counts[p]} {p} ({sizes[p]:,} bytes)" for p in sorted(counts)
    )


def read_model(model_content):
    """The file as `ai_edge_litert`'s mutable object tree (`ModelT`).

    A buffer stored after the flatbuffer (an `offset` and `size` instead of
    `data`, as ai-edge-quantizer writes some files) is read into `data`:
    the object tree holds no bytes past the flatbuffer, so `write_model`
    would otherwise write a file whose weights point past its end.
    """
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    content = _files.read_model_bytes(model_content)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    for buffer in model.buffers or ():
        offset, size = int(buffer.offset or 0), int(buffer.size or 0)
        if buffer.data is None and size > 0:
            if offset + size > len(content):
                raise ValueError(
                    f"The LiteRT file is truncated: a buffer of {size:,} "
                    f"bytes at offset {offset:,} ends past its "
                    f"{len(content):,} bytes."
                )
            buffer.data = np.frombuffer(
                content, dtype=np.uint8, count=size, offset=offset
            ).copy()
            buffer.offset = buffer.size = 0
    return model


def write_model(model):
    """The bytes of a `ModelT`."""
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def add_signature(model_content, input_names, output_names, key):
    """The file with a signature `key` naming its main subgraph's inputs and
    outputs, for LiteRT's signature runners (and ai-edge-quantizer).

    Args:
        model_content: The flatbuffer bytes (or a path).
        input_names: One name per input tensor, in the subgraph's order.
        output_names: One name per output tensor, in the subgraph's order.
        key: The signature's key, e.g. `"serving_default"`.

    Returns:
        The flatbuffer bytes.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(model_content)
    graph = model.subgraphs[0]
    if len(input_names) != len(graph.inputs) or len(output_names) != len(
        graph.outputs
    ):
        raise ValueError(
            f"Signature {key!r} names {len(input_names)} input(s) and "
            f"{len(output_names)} output(s), but the file has "
            f"{len(graph.inputs)} and {len(graph.outputs)}."
        )

    def tensor_maps(names, indices):
        maps = []
        for name, index in zip(names, indices):
            tensor_map = schema.TensorMapT()
            tensor_map.name = name
            tensor_map.tensorIndex = int(index)
            maps.append(tensor_map)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = tensor_maps(input_names, graph.inputs)
    signature.outputs = tensor_maps(output_names, graph.outputs)
    model.signatureDefs = [signature]
    return write_model(model)


def op_name(model, op):
    """The builtin name of `op`, e.g. `"CONV_2D"`."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    code = flatbuffer_utils.get_builtin_code_from_operator_code(
        model.operatorCodes[op.opcodeIndex]
    )
    return _enum_names(schema.BuiltinOperator).get(code, str(code))


def type_name(tensor_type):
    """`"float32"`, `"int4"`, ... for a flatbuffer `TensorType` value."""
    from ai_edge_litert import schema_py_generated as schema

    return _enum_names(schema.TensorType)[tensor_type].lower()


def tensor_names(graph, indices):
    """The names of the tensors at `indices` (skipping omitted inputs)."""
    return [_decode(graph.tensors[i].name) for i in tensor_indices(indices)]


def layer_map(model):
    """`{op_index: layer_path}` recorded in the file's metadata, or `{}`."""
    for entry in model.metadata or ():
        if _decode(entry.name) == LAYERS_METADATA:
            data = model.buffers[entry.buffer].data
            if data is None:
                return {}
            recorded = json.loads(bytes(data).decode("utf-8"))
            return {int(index): path for index, path in recorded.items()}
    return {}


def set_layer_map(model, layers):
    """Records `{op_index: layer_path}` in the metadata of `model`."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    text = json.dumps({str(k): v for k, v in sorted(layers.items())})
    buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = LAYERS_METADATA
    entry.buffer = len(model.buffers) - 1
    model.metadata = [
        m for m in (model.metadata or ()) if _decode(m.name) != LAYERS_METADATA
    ] + [entry]


def weight_ops(model):
    """Yields `(op_index, op, weight_tensor_index, dequantized)` for each
    operator of the main subgraph that reads a constant weight (directly,
    or through a `DEQUANTIZE` op: `dequantized=True`)."""
    graph = model.subgraphs[0]
    producers = {}
    for op in graph.operators:
        for output in tensor_indices(op.outputs):
            producers[output] = op
    for index, op in enumerate(graph.operators):
        if op_name(model, op) not in WEIGHT_OPS:
            continue
        found = _weight_input(model, graph, op, producers)
        if found is not None:
            yield (index, op, *found)


def _weight_input(model, graph, op, producers):
    """`(tensor_index, dequantized)` of the op's constant weight, or None."""
    for tensor_index in tensor_indices(op.inputs):
        tensor = graph.tensors[tensor_index]
        if len(tensor.shape) < 2:
            continue
        if is_constant(model, tensor):
            return tensor_index, False
        producer = producers.get(tensor_index)
        if producer is not None and op_name(model, producer) == "DEQUANTIZE":
            source = tensor_indices(producer.inputs)[0]
            if is_constant(model, graph.tensors[source]):
                return source, True
    return None


def _output_type(graph, op):
    """Type of the op's first output: integer kernels write integers, where
    dynamic-range and float kernels write floats. (Its inputs tell less: a
    TRANSPOSE_CONV's first input is an int32 output shape, a GATHER's its
    int32 indices.)"""
    outputs = tensor_indices(op.outputs)
    return type_name(graph.tensors[outputs[0]].type) if outputs else "float32"


def is_constant(model, tensor):
    """Whether `tensor` (a `TensorT` of `model`) has data stored in the file."""
    if not tensor.buffer:
        return False
    return _buffer_bytes(model, tensor) > 0


def _buffer_bytes(model, tensor):
    data = model.buffers[tensor.buffer].data
    return 0 if data is None else len(data)


def _granularity(tensor):
    quantization = tensor.quantization
    if quantization is None:
        return None
    details = getattr(quantization, "details", None)
    block_size = getattr(details, "blockSize", None)
    if block_size:
        return f"block{block_size}"
    scales = quantization.scale
    if scales is None or len(scales) == 0:
        return None
    return "channel" if len(scales) > 1 else "tensor"


def tensor_indices(indices):
    """An operator's tensor indices as ints, without the -1 of an omitted
    optional tensor."""
    return [int(i) for i in (indices if indices is not None else ()) if i >= 0]


def _decode(name):
    if name is None:
        return ""
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def _enum_names(enum_class):
    return {
        value: key
        for key, value in vars(enum_class).items()
        if not key.startswith("_") and isinstance(value, int)
    }
