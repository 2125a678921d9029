"""Conversion on the reference workload: keras_compress and Keras core.

The workload of `BENCHMARKS.md`, conversion variant, in one invocation:

1. Keras 3 baseline: the reference CNN on Fashion-MNIST (60k/10k),
   Adam(1e-3), batch 128, 3 epochs, seed `s` (the same code as
   `pruning_benchmark.py`).
2. The baseline converted every way, each file run on all test images:
   - keras_compress: `to_tflite` float32, float16, dynamic, int8 PTQ with
     float I/O and with int8 I/O (200 training images), int16x8; `to_onnx`
     float32 and float16; and the baseline after Keras's own
     `Model.quantize("int8")` through `to_tflite(mode="dynamic")`.
   - Keras core, where it has an equivalent: `Model.export(path,
     format="litert", **converter_settings)` with the same settings
     (`optimizations`, `representative_dataset`, `target_spec`,
     `inference_input_type`), and the Keras-quantized model through the
     same call (which fails on this stack).
3. Every file is measured by the same code: accuracy on the whole test set,
   raw and gzip -9 bytes, median latency of single-image runs with one
   thread (LiteRT interpreter, or ONNX Runtime for ONNX files); all files
   are timed round-robin, 3 rounds, and each keeps its fastest median.

Prints one table with ratios to the same tool's float32 file, and the
issue's goals for int8 PTQ. Usage:

    python benchmarks/convert_benchmark.py                 # full workload
    python benchmarks/convert_benchmark.py --quick         # smoke test
    python benchmarks/convert_benchmark.py --json out.json --keep-files DIR
"""

import os
import re
import sys
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Shared with the other benchmarks: model, training, report and table code.
import _common  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_compress as kc  # noqa: E402

TOOLS = ("keras_compress", "keras core")
# (key, label, keras_compress call, Keras core converter settings or None)
# Calls take (model, calibration) and return the file's bytes.
NUM_CALIBRATION = 200
PACKAGES = _common.PACKAGES + (
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "onnxconverter-common",
)


def _representative(calibration):
    def dataset():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    return dataset


def variants():
    """The conversions, each with its Keras core equivalent if any."""
    default = [tf.lite.Optimize.DEFAULT]

    def kc_tflite(mode, **kwargs):
        def convert(model, calibration):
            data = calibration if mode in ("int8", "int16x8") else None
            return kc.convert.to_tflite(
                model, mode, representative_data=data, verbose=0, **kwargs
            )

        return convert

    def kc_onnx(**kwargs):
        return lambda model, calibration: kc.convert.to_onnx(model, **kwargs)

    def core(**settings):
        def convert(model, calibration):
            options = dict(settings)
            if options.get("representative_dataset"):
                options["representative_dataset"] = _representative(calibration)
            return _keras_core_litert(model, options)

        return convert

    int16x8_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8  # noqa: E501
    ]
    return [
        ("float32", "LiteRT float32", kc_tflite("float32"), core()),
        (
            "float16",
            "LiteRT float16",
            kc_tflite("float16"),
            core(
                optimizations=default,
                target_spec={"supported_types": [tf.float16]},
            ),
        ),
        (
            "dynamic",
            "LiteRT dynamic",
            kc_tflite("dynamic"),
            core(optimizations=default),
        ),
        (
            "int8",
            "LiteRT int8 PTQ, float I/O",
            kc_tflite("int8"),
            core(optimizations=default, representative_dataset=True),
        ),
        (
            "int8_io",
            "LiteRT int8 PTQ, int8 I/O",
            kc_tflite("int8", int8_io=True),
            core(
                optimizations=default,
                representative_dataset=True,
                inference_input_type=tf.int8,
                inference_output_type=tf.int8,
            ),
        ),
        (
            "int16x8",
            "LiteRT int16x8",
            kc_tflite("int16x8"),
            core(
                optimizations=default,
                representative_dataset=True,
                target_spec={"supported_ops": int16x8_ops},
            ),
        ),
        ("onnx", "ONNX float32", kc_onnx(), None),
        ("onnx_f16", "ONNX float16 inside", kc_onnx(float16=True), None),
        (
            "keras_int8",
            "Keras quantize('int8') -> dynamic",
            kc_tflite("dynamic"),
            core(optimizations=default),
        ),
    ]


def _keras_core_litert(model, settings):
    with tempfile.TemporaryDirectory(prefix="kc_convert_bench_") as folder:
        path = os.path.join(folder, "model.tflite")
        model.export(path, format="litert", verbose=False, **settings)
        with open(path, "rb") as f:
            return f.read()


def _is_tflite(content):
    return content[4:8] == b"TFL3"


def measure(content, x_test, y_test):
    """File accuracy and sizes of a LiteRT or ONNX file."""
    if _is_tflite(content):
        outputs = kc.convert.run_tflite(content, x_test)
    else:
        outputs = kc.convert.run_onnx(content, x_test)
    num_bytes, gzip_bytes = kc.convert.file_sizes(content)
    return {
        "file_acc": _common.outputs_accuracy(outputs, y_test),
        "bytes": int(num_bytes),
        "gzip_bytes": int(gzip_bytes),
    }


def measure_latencies(contents, sample, num_runs, rounds):
    """Median single-image latency of each file, with one thread.

    Other processes on a shared machine slow some timings down, never up,
    and in bursts. So the files are timed round-robin, `rounds` times, and
    each keeps its fastest median: a burst then hits one round of every
    file instead of all rounds of one file.
    """
    best = {}
    for _ in range(rounds):
        for name, content in contents.items():
            measure_one = (
                kc.convert.measure_latency
                if _is_tflite(content)
                else kc.convert.measure_onnx_latency
            )
            latency = measure_one(
                content, sample, num_runs=num_runs, num_threads=1
            )
            best[name] = min(latency, best.get(name, latency))
    return best


def _error_line(error):
    """The converter's own complaint, without its location preamble."""
    text = str(error)
    match = re.search(r"('(?:tf|tfl)\.\w+' op [^\n]+)", text)
    first = match.group(1) if match else text.strip().splitlines()[0]
    return f"{type(error).__name__}: {first[:130]}"


def run(cfg, data, keep_dir=None):
    (x_train, y_train), (x_test, y_test) = data
    seed = cfg["seed"]
    print(
        f"\n== Keras 3 baseline ({cfg['epochs']} epochs, seed {seed}) ...",
        flush=True,
    )
    keras.utils.set_random_seed(seed)
    baseline = _common.build_model(keras)
    _common.compile_model(keras, baseline, 1e-3)
    start = time.perf_counter()
    baseline.fit(
        x_train, y_train, batch_size=128, epochs=cfg["epochs"], verbose=0
    )
    train_s = time.perf_counter() - start
    float_acc = _common.accuracy(baseline, x_test, y_test)
    print(
        f"   trained in {train_s:.0f} s, Keras test accuracy {float_acc:.4f}",
        flush=True,
    )

    quantized = kc.rewrite.copy_layer(baseline)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # layers it skips
        quantized.quantize("int8")
    quantized_acc = _common.accuracy(quantized, x_test, y_test)
    calibration = x_train[:NUM_CALIBRATION]

    rows = {}
    contents = {}
    # One untimed float32 conversion per tool first: the first conversion
    # of a process pays TensorFlow's and the converter's start-up.
    for _, _, kc_convert, core_convert in variants()[:1]:
        kc_convert(baseline, calibration)
        core_convert(baseline, calibration)
    for key, label, kc_convert, core_convert in variants():
        model = quantized if key == "keras_int8" else baseline
        keras_acc = quantized_acc if key == "keras_int8" else float_acc
        rows[key] = {}
        for tool, convert in zip(TOOLS, (kc_convert, core_convert)):
            if convert is None:
                continue
            print(f"   {label}: {tool} ...", flush=True)
            start = time.perf_counter()
            try:
                content = convert(model, calibration)
            except Exception as error:  # report it in the table
                rows[key][tool] = {"error": _error_line(error)}
                print(f"      failed: {rows[key][tool]['error']}")
                continue
            convert_s = time.perf_counter() - start
            row = measure(content, x_test, y_test)
            row.update(keras_acc=keras_acc, convert_s=convert_s)
            rows[key][tool] = row
            contents[(key, tool)] = content
            if keep_dir:
                suffix = "onnx" if key.startswith("onnx") else "tflite"
                slug = tool.replace(" ", "_")
                _common.write_file(keep_dir, f"{key}_{slug}.{suffix}", content)
    print(
        f"   timing {len(contents)} files, {cfg['latency_rounds']} rounds "
        f"of {cfg['latency_runs']} runs ...",
        flush=True,
    )
    latencies = measure_latencies(
        contents, x_test[:1], cfg["latency_runs"], cfg["latency_rounds"]
    )
    for (key, tool), latency in latencies.items():
        rows[key][tool]["latency_s"] = latency
    for tool in TOOLS:
        base = rows["float32"].get(tool)
        for by_tool in rows.values():
            row = by_tool.get(tool)
            if base and row and "error" not in row:
                for name in ("bytes", "gzip_bytes", "latency_s"):
                    row[f"{name}_vs_f32"] = row[name] / base[name]
    return {
        "float_acc": float_acc,
        "quantized_acc": quantized_acc,
        "train_s": train_s,
        "rows": rows,
    }


COLUMNS = (
    # (figure, header, format)
    ("keras_acc", "keras acc", "{:.4f}"),
    ("file_acc", "file acc", "{:.4f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("bytes_vs_f32", "bytes/f32", "{:.3f}"),
    ("gzip_bytes", "gzip bytes", "{:,.0f}"),
    ("gzip_bytes_vs_f32", "gzip/f32", "{:.3f}"),
    ("latency_s", "latency us", None),
    ("latency_s_vs_f32", "lat/f32", "{:.2f}"),
    ("convert_s", "convert s", "{:.2f}"),
)


def format_table(rows):
    header = ["variant", "tool"] + [c[1] for c in COLUMNS]
    groups = []
    for key, label, *_ in variants():
        group = []
        for tool in TOOLS:
            row = rows[key].get(tool)
            if row is None:
                continue
            if "error" in row:  # one wide cell
                group.append([label, tool, "fails: " + row["error"]])
                continue
            cells = [
                _common.format_cell(name, fmt, row.get(name))
                for name, _, fmt in COLUMNS
            ]
            group.append([label, tool] + cells)
        groups.append(group)
    return _common.format_table(header, groups, num_left=2)


def conversion_times(rows):
    """keras_compress's conversion time over Keras core's, per variant."""
    ratios = []
    for key, label, *_ in variants():
        ours, core = (rows[key].get(tool) or {} for tool in TOOLS)
        if "convert_s" in ours and "convert_s" in core:
            ratios.append(
                f"{label} {ours['convert_s'] / core['convert_s']:.2f}x"
            )
    return "Conversion time, keras_compress / Keras core: " + ", ".join(ratios)


def goals(result):
    """The issue's goals for int8 PTQ (float I/O), keras_compress files."""
    rows = result["rows"]
    int8 = rows["int8"]["keras_compress"]
    lines = []
    for label, ok, detail in (
        (
            "int8 PTQ accuracy within 0.5 points of the float model",
            int8["file_acc"] >= result["float_acc"] - 0.005,
            f"{int8['file_acc']:.4f} vs {result['float_acc']:.4f}",
        ),
        (
            "int8 bytes <= 0.27x float32",
            int8["bytes_vs_f32"] <= 0.27,
            f"{int8['bytes_vs_f32']:.3f}x",
        ),
        (
            "int8 latency <= 0.45x float32",
            int8["latency_s_vs_f32"] <= 0.45,
            f"{int8['latency_s_vs_f32']:.2f}x",
        ),
    ):
        lines.append(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")
    return "\n".join(lines)


def main(argv=None):
    parser = _common.benchmark_parser(__doc__)
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (default 0)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 6000 train / 1000 test images, "
        "1 epoch, 100 latency runs",
    )
    _common.add_arguments(
        parser,
        "latency_runs",
        latency_runs="single-image runs per latency median",
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=3,
        help="times every file is timed, round-robin; the fastest median "
        "counts (default 3)",
    )
    _common.add_arguments(
        parser,
        "json",
        "keep_files",
        keep_files="save every converted file to this folder",
    )
    args = parser.parse_args(argv)
    bench = _common.BenchmarkRun(PACKAGES)

    cfg = {
        "seed": args.seed,
        "quick": args.quick,
        "epochs": 1 if args.quick else 3,
        "latency_runs": min(args.latency_runs, 100)
        if args.quick
        else args.latency_runs,
        "latency_rounds": max(1, args.latency_rounds),
        "num_calibration": NUM_CALIBRATION,
    }
    name, train, test = _common.load_data(
        max_train=6000 if args.quick else None,
        max_test=1000 if args.quick else None,
        seed=0,
    )
    cfg.update(dataset=name, num_train=len(train[0]), num_test=len(test[0]))
    print(
        f"data: {name}, {cfg['num_train']} train / {cfg['num_test']} test; "
        f"baseline {cfg['epochs']} epochs Adam(1e-3) batch 128; calibration: "
        f"first {NUM_CALIBRATION} training images; latency: median of "
        f"{cfg['latency_runs']} single-image runs, 1 thread, best of "
        f"{cfg['latency_rounds']} rounds"
    )
    result = run(cfg, (train, test), args.keep_files)
    print(
        f"\n-- Keras accuracy: float {result['float_acc']:.4f}, after "
        f"Model.quantize('int8') {result['quantized_acc']:.4f}"
    )
    print(format_table(result["rows"]))
    print(
        "\nfile acc: the converted file on every test image; x/f32: "
        "ratio to the same tool's float32 LiteRT file; latency: LiteRT "
        "interpreter (ONNX rows: ONNX Runtime), batch 1, 1 thread; "
        "convert s: wall time of the conversion call."
    )
    print(conversion_times(result["rows"]))
    print("Goals (keras_compress, int8 PTQ with float I/O):")
    print(goals(result))
    bench.finish(args.json, cfg, result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
