"""Latency of each operator of a LiteRT file, and of each Keras layer.

LiteRT's Python interpreter has no per-operator profiler, so each operator
is timed **alone**: it is cut out of the file into a one-operator file with
exactly its tensors (the same stored weights, scales and types, the same
fused activation), fed the values it receives in a run of the whole file,
and invoked like `measure_latency` invokes a file. The kernel that runs is
the one the file runs, so an int4 layer is timed against its int8 and
float32 versions knowingly.

What "alone" leaves out: work an operator shares with its neighbours in
the whole file (caches warmed by the previous operator, operators XNNPACK
fuses into one partition) and the whole file's single invoke overhead,
which each one-operator file pays once (about 0.6 µs on this project's
CPU: the time of a tiny operator, an LSTM step's LOGISTIC, say). The sum of
the operators is therefore close to, not equal to, the file's latency;
both are reported by the benchmarks.
"""

import copy
import dataclasses

import numpy as np

from keras_compress.convert import _files
from keras_compress.convert import flatbuffer
from keras_compress.convert import interpreter as interpreter_lib
from keras_compress.convert.flatbuffer import tensor_indices

# Operators that call other subgraphs cannot be cut out alone.
_CONTROL_FLOW_OPS = ("CALL_ONCE", "IF", "WHILE", "STABLEHLO_COMPOSITE")


@dataclasses.dataclass(frozen=True)
class OpLatency:
    """One operator of a LiteRT file, timed alone.

    Attributes:
        op_index: Position in the execution plan of the main subgraph.
        op_name: Builtin name, e.g. `"CONV_2D"`.
        layer: Path of the Keras layer the operator came from, where the
            file records it (files written with `to_tflite(precision=...)`),
            else `None`.
        output_name: Name of the operator's first output tensor (it names
            the layer's scope in files without the record).
        latency_s: Median seconds of one invoke of the operator alone, or
            `None` when it cannot run alone (`note` says why).
        note: Why `latency_s` is `None`, else `None`.
    """

    op_index: int
    op_name: str
    layer: object
    output_name: str
    latency_s: object
    note: object = None


def op_latencies(
    model_content, sample=None, num_runs=100, num_warmup=10, num_threads=1
):
    """Times every operator of a LiteRT file alone.

    Args:
        model_content: The flatbuffer bytes or a path to a `.tflite` file.
        sample: One input batch of size 1 (a list, or a dict by input name)
            whose run through the whole file gives each operator its input
            values; `None` uses random values, as `measure_latency` does.
            Values matter little for speed, but an index input (GATHER)
            must be valid.
        num_runs: Timed invocations per operator.
        num_warmup: Untimed invocations first.
        num_threads: Interpreter threads; 1 gives the steadiest numbers.

    Returns:
        A list of `OpLatency`, in execution order.

    Example:

    ```python
    blob = kc.convert.to_tflite(model, "int8", representative_data=x[:200],
                                precision={"dense": "w4a8"})
    for row in kc.convert.op_latencies(blob):
        print(row.op_name, row.layer, row.latency_s)
    print(kc.convert.layer_latencies(kc.convert.op_latencies(blob)))
    ```
    """
    if num_runs < 1:
        raise ValueError(f"`num_runs` must be >= 1, got {num_runs}.")
    content = _files.read_model_bytes(model_content)
    model = flatbuffer.read_model(content)
    layers = flatbuffer.layer_map(model)
    values = _tensor_values(content, sample)
    graph = model.subgraphs[0]
    rows = []
    for index, op in enumerate(graph.operators):
        name = flatbuffer.op_name(model, op)
        outputs = flatbuffer.tensor_names(graph, op.outputs)
        latency, note = None, _why_not_alone(model, graph, op, name)
        if note is None:
            alone = single_op_file(model, index, values)
            latency = _time_alone(
                alone, model, op, values, num_runs, num_warmup, num_threads
            )
        rows.append(
            OpLatency(
                op_index=index,
                op_name=name,
                layer=layers.get(index),
                output_name=outputs[0] if outputs else "",
                latency_s=latency,
                note=note,
            )
        )
    return rows


def layer_latencies(rows):
    """Sums operator latencies per Keras layer.

    Args:
        rows: The `OpLatency` list of `op_latencies`.

    Returns:
        A dict `{layer path: seconds}` in execution order, over the
        operators the file attributes to a layer and that ran alone.
    """
    totals = {}
    for row in rows:
        if row.layer is not None and row.latency_s is not None:
            totals[row.layer] = totals.get(row.layer, 0.0) + row.latency_s
    return totals


def single_op_file(model, index, values=None):
    """The flatbuffer bytes of a file holding operator `index` of `model`
    (a `ModelT`; main subgraph) alone.

    Its inputs are the operator's non-constant inputs, its outputs the
    operator's outputs; constant inputs (weights, biases, shapes) keep their
    stored data, type and quantization. An index-like input (an integer
    tensor without quantization: a computed shape, GATHER indices) whose
    value is in `values` (`{tensor index: array}`) is stored as a constant
    instead: LiteRT sizes the output from it when the file is loaded.
    """
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    op = graph.operators[index]
    fed, baked = _inputs_alone(model, op, values or {})
    used = list(
        dict.fromkeys(
            i
            for indices in (op.inputs, op.outputs, op.intermediates)
            for i in tensor_indices(indices)
        )
    )
    new_index = {old: new for new, old in enumerate(used)}
    buffers = [schema.BufferT()]  # buffer 0: the empty one, by convention
    tensors = []
    for old in used:
        tensor = copy.copy(graph.tensors[old])
        tensor.buffer = 0
        if flatbuffer.is_constant(model, graph.tensors[old]):
            buffers.append(model.buffers[graph.tensors[old].buffer])
            tensor.buffer = len(buffers) - 1
        elif old in baked:
            value = np.array(values[old], order="C")  # keeps 0-d shapes
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
            buffers.append(buffer)
            tensor.buffer = len(buffers) - 1
            tensor.shape = list(value.shape)
            tensor.shapeSignature = None
        tensors.append(tensor)

    alone = copy.copy(op)
    alone.inputs = _remapped(op.inputs, new_index)
    alone.outputs = _remapped(op.outputs, new_index)
    if op.intermediates is not None:
        alone.intermediates = _remapped(op.intermediates, new_index)

    subgraph = schema.SubGraphT()
    subgraph.name = graph.name
    subgraph.tensors = tensors
    subgraph.operators = [alone]
    subgraph.inputs = [new_index[i] for i in fed]
    subgraph.outputs = [new_index[i] for i in tensor_indices(op.outputs)]

    result = schema.ModelT()
    result.version = model.version
    result.description = model.description
    result.operatorCodes = model.operatorCodes
    result.buffers = buffers
    result.subgraphs = [subgraph]
    return flatbuffer.write_model(result)


def _inputs_alone(model, op, values):
    """`(fed, baked)`: the op's non-constant inputs, once each and in order,
    that its one-operator file takes as inputs, and those it stores."""
    graph = model.subgraphs[0]
    fed, baked = [], []
    for i in dict.fromkeys(tensor_indices(op.inputs)):
        tensor = graph.tensors[i]
        if flatbuffer.is_constant(model, tensor):
            continue
        quantized = tensor.quantization is not None and (
            tensor.quantization.scale is not None
            and len(tensor.quantization.scale)
        )
        dtype = flatbuffer.type_name(tensor.type)
        index_like = dtype in ("int32", "int64", "bool") and not quantized
        (baked if index_like and i in values else fed).append(i)
    return fed, baked


def _remapped(indices, new_index):
    # -1 marks an omitted optional input and stays -1.
    return [new_index[int(i)] if i >= 0 else -1 for i in indices]


def _why_not_alone(model, graph, op, name):
    if name in _CONTROL_FLOW_OPS:
        return f"{name} calls other subgraphs"
    for i in tensor_indices(op.inputs) + tensor_indices(op.outputs):
        tensor = graph.tensors[i]
        if tensor.isVariable:
            return f"{name} reads or writes a variable tensor"
    return None


def _tensor_values(content, sample):
    """`{tensor index: value}` of every tensor in one run of the file."""
    full = interpreter_lib._preserving_interpreter(content)
    full.allocate_tensors()
    details = full.get_input_details()
    if sample is None:
        rng = np.random.default_rng(0)
        shapes = [tuple(int(n) for n in d["shape"]) for d in details]
        sample = [rng.random(shape) for shape in shapes]
    else:
        sample = interpreter_lib._ordered_inputs(full, sample, "sample")
    for detail, value in zip(details, sample):
        shape = tuple(int(n) for n in detail["shape"])
        if tuple(np.shape(value)) != shape:
            raise ValueError(
                f"`sample` input {detail['name']!r} has shape "
                f"{np.shape(value)}; the file takes {shape} (one sample)."
            )
        value = interpreter_lib._quantize(value, detail)
        full.set_tensor(detail["index"], value)
    full.invoke()

    values = {}
    for detail in full.get_tensor_details():
        try:
            values[detail["index"]] = full.get_tensor(detail["index"])
        except ValueError:
            pass  # a tensor with no data (an omitted or scratch tensor)
    return values


def _time_alone(content, model, op, values, num_runs, num_warmup, threads):
    interpreter = interpreter_lib._allocated_interpreter(content, threads)
    fed, _ = _inputs_alone(model, op, values)
    for detail, old in zip(interpreter.get_input_details(), fed):
        interpreter.set_tensor(detail["index"], values[old])
    return interpreter_lib._median_invoke_seconds(
        interpreter, num_runs, num_warmup
    )
