"""The `keras-compress` command.

Sub-commands: `demo` (the end-to-end demo), `convert` (a `.keras` model to
LiteRT or ONNX) and `verify` (a converted file against its Keras model).
Errors in `convert` and `verify` are printed as one line on stderr with
exit status 1; wrong arguments exit with status 2, as argparse does.
"""

import argparse
import contextlib
import json
import os
import sys
import zipfile

from keras_compress.convert import _native_logs

TFLITE_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")

DATA_FORMAT = """\
data files (.npz, written with numpy.savez):
  x        inputs, batch first, shaped like the model's input
           (e.g. float32 images of shape (N, 28, 28, 1))
  x_0, x_1, ...  instead of x, for a model with several inputs
  y        optional integer class labels, shape (N,) (one-hot (N, C) also
           accepted); only `verify` uses them, for accuracies
  example: numpy.savez("data.npz", x=x_test[:1000], y=y_test[:1000])
"""


def _demo(args):
    from keras_compress import demo

    log = (lambda *a, **k: None) if args.quiet else print
    if args.quick:
        args.max_train = args.max_train or 6000
        args.max_test = args.max_test or 2000
        args.epochs = min(args.epochs, 2)
        args.finetune_epochs = min(args.finetune_epochs, 2)
        args.latency_runs = min(args.latency_runs, 100)
    rows = demo.run_demo(
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        max_train=args.max_train,
        max_test=args.max_test,
        sparsity=args.sparsity,
        seed=args.seed,
        latency_runs=args.latency_runs,
        output_dir=args.output,
        data_dir=args.data_dir,
        log=log,
    )
    print()
    print(demo.format_table(rows))
    if args.output:
        print(f"\nFiles and report.json written to {args.output}")
    return 0


class CommandError(Exception):
    """A problem to report on stderr as one line, without a traceback."""


def _load_model(path):
    """Loads a `.keras` model; keras_compress's own layers are registered."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import keras_compress  # noqa: F401  (registers serializable objects)

    if not os.path.exists(path):
        raise CommandError(f"model file not found: {path}")
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        # Keras says "File not found" for a file it cannot open as a zip.
        raise CommandError(
            f"{path} is not a .keras file (a .keras file is a zip archive "
            "written by model.save()); it may be damaged or in another "
            "format"
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise CommandError(
            f"cannot load the Keras model {path}: {_first_line(error)} "
            "(expected a .keras file saved with model.save())"
        ) from error


def _read_npz(path, argument):
    """`{name: array}` of an .npz file, or a CommandError naming `argument`."""
    import numpy as np

    if not os.path.exists(path):
        raise CommandError(f"{argument} file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as error:
        raise CommandError(
            f"cannot read {argument} file {path} as .npz: {_first_line(error)}"
        ) from error


def _load_data(path, argument):
    """`(x, y)` from an .npz file; `x` is a list for several inputs."""
    arrays = _read_npz(path, argument)
    numbered = sorted(
        (name for name in arrays if name.startswith("x_")),
        key=lambda name: int(name[2:]) if name[2:].isdigit() else -1,
    )
    if "x" in arrays:
        x = arrays["x"]
    elif numbered:
        x = [arrays[name] for name in numbered]
    else:
        raise CommandError(
            f"{argument} file {path} has arrays {sorted(arrays)}, but no "
            "'x' (or 'x_0', 'x_1', ...): save the inputs as x, e.g. "
            "numpy.savez(path, x=x, y=y)"
        )
    return x, arrays.get("y")


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _convert(args):
    if args.to == "onnx":
        if args.mode not in (None, "float32"):
            raise CommandError(
                f"--mode {args.mode} is for --to tflite; an ONNX file is "
                "float32, or float16 inside with --float16"
            )
        for flag, used in (
            ("--calib", args.calib),
            ("--int8-io", args.int8_io),
            ("--sparse/--no-sparse", args.sparse is not None),
            ("--allow-select-tf-ops", args.allow_select_tf_ops),
            ("--precision", args.precision is not None),
            ("--algorithm", args.algorithm is not None),
            ("--activation-range", args.activation_range is not None),
        ):
            if used:
                raise CommandError(f"{flag} is for --to tflite, not onnx")
    else:
        for flag, used in (
            ("--float16", args.float16),
            ("--opset", args.opset is not None),
            ("--fixed-batch", args.fixed_batch),
        ):
            if used:
                hint = " (use --mode float16)" if flag == "--float16" else ""
                raise CommandError(f"{flag} is for --to onnx{hint}")
    output = args.output or (os.path.splitext(args.model)[0] + "." + args.to)
    if os.path.abspath(output) == os.path.abspath(args.model):
        raise CommandError(f"-o {output} would overwrite the model")
    calibration = None
    if args.calib is not None:
        # A list of arrays (several inputs) is one calibration element.
        calibration, _ = _load_data(args.calib, "--calib")
    precision = _precision_argument(args.precision)
    model = _load_model(args.model)

    from keras_compress import convert

    if args.to == "onnx":
        content = convert.to_onnx(
            model,
            output,
            opset=args.opset,
            dynamic_batch=not args.fixed_batch,
            float16=args.float16,
            verbose=2 if args.native_logs else 0,
        )
        kind = "ONNX" + (" (float16 inside)" if args.float16 else "")
    else:
        mode = args.mode or "float32"
        # Speak in the command's terms, not the Python API's.
        with _in_command_terms(
            {
                "`representative_data`": "--calib DATA.npz",
                "`int8_io=True`": "--int8-io",
                "`sparse=True`": "--sparse",
                "`precision=`": "--precision",
                "`precision`": "--precision",
                "`algorithm`": "--algorithm",
                "`activation_range`": "--activation-range",
            }
        ):
            content = convert.to_tflite(
                model,
                mode,
                representative_data=calibration,
                int8_io=args.int8_io,
                sparse=args.sparse,
                path=output,
                allow_select_tf_ops=args.allow_select_tf_ops,
                num_calibration_samples=args.num_calibration_samples,
                precision=precision,
                algorithm=args.algorithm or "min_max",
                activation_range=args.activation_range or "min_max",
                verbose=2 if args.native_logs else 0 if args.quiet else "auto",
            )
        kind = f"LiteRT {mode}" + (", int8 I/O" if args.int8_io else "")
        if precision is not None:
            kind += ", per-layer precision"
    raw, gzipped = convert.file_sizes(content)
    if not args.quiet:
        print(f"Wrote {output}: {kind}, {raw:,} bytes ({gzipped:,} gzipped)")
        if precision is not None:
            from keras_compress.convert import flatbuffer

            weights = flatbuffer.weight_tensors(content)
            print(f"  weights: {flatbuffer.describe(weights)}")
    return 0


def _precision_argument(value):
    """`--precision`: a spec ("w4a8"), "layer=spec,..." or a JSON file
    holding {layer: spec}."""
    if value is None:
        return None
    if value.endswith(".json"):
        if not os.path.isfile(value):
            raise CommandError(f"--precision file not found: {value}")
        try:
            with open(value) as f:
                precision = json.load(f)
        except (OSError, ValueError) as error:
            raise CommandError(
                f"--precision {value} is not a JSON file: {error}"
            ) from None
        if not isinstance(precision, dict):
            raise CommandError(
                f"--precision {value} must hold a JSON object "
                '{"layer name": "spec", ...}'
            )
        return precision
    if "=" in value:
        pairs = [item.split("=", 1) for item in value.split(",") if item]
        if any(len(pair) != 2 or not all(pair) for pair in pairs):
            raise CommandError(
                f"--precision {value!r}: expected layer=spec pairs "
                "separated by commas, e.g. conv2d=w4a8,dense=w4"
            )
        return {layer.strip(): spec.strip() for layer, spec in pairs}
    return value


def _verify(args):
    x, y = _load_data(args.data, "--data")
    if args.max_samples is not None:
        keep = slice(0, args.max_samples)
        x = [a[keep] for a in x] if isinstance(x, list) else x[keep]
        y = None if y is None else y[keep]
    if len(args.paths) > 2:
        raise CommandError(
            f"expected [MODEL.keras] FILE, got {len(args.paths)} paths"
        )
    file = args.paths[-1]
    if not os.path.exists(file):
        raise CommandError(f"converted file not found: {file}")
    model_path = (
        args.paths[0]
        if len(args.paths) == 2
        else os.path.splitext(file)[0] + ".keras"
    )
    if len(args.paths) == 1 and not os.path.exists(model_path):
        raise CommandError(
            f"no Keras model beside {file} ({model_path} not found): give "
            "it first, e.g. keras-compress verify model.keras "
            f"{os.path.basename(file)} --data DATA.npz"
        )
    model = _load_model(model_path)

    from keras_compress import convert

    report = convert.verify(
        model,
        file,
        x,
        y,
        batch_size=args.batch_size,
        latency_runs=args.latency_runs,
        num_threads=args.num_threads,
    )
    if args.json:
        import json

        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report)
    return 0


def _compress_data(path):
    """`(train, val)` from an .npz: x_train/y_train/x_val/y_val, or x/y."""
    arrays = _read_npz(path, "--data")
    split = ("x_train", "y_train", "x_val", "y_val")
    if all(name in arrays for name in split):
        return (arrays["x_train"], arrays["y_train"]), (
            arrays["x_val"],
            arrays["y_val"],
        )
    if "x" in arrays and "y" in arrays:
        # The last tenth validates, as Keras's validation_split does.
        x, y = arrays["x"], arrays["y"]
        if len(x) != len(y):
            raise CommandError(
                f"--data file {path}: x has {len(x)} samples but y has "
                f"{len(y)} labels; give one label per sample"
            )
        cut = len(x) - max(1, len(x) // 10)
        return (x[:cut], y[:cut]), (x[cut:], y[cut:])
    raise CommandError(
        f"--data file {path} has arrays {sorted(arrays)}; expected x_train, "
        "y_train, x_val, y_val (or x and y, of which the last 10 % "
        "validates)"
    )


def _compress(args):
    train, val = _compress_data(args.data)
    model = _load_model(args.model)
    loss = None
    if args.loss is not None:
        import keras

        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=args.loss == "logits"
        )
    elif getattr(model, "loss", None) is None:
        import keras

        try:  # The saved model may carry its compile() settings.
            model = keras.saving.load_model(args.model)
        except Exception:
            pass
        if getattr(model, "loss", None) is None:
            raise CommandError(
                "the model was saved without a loss: give --loss logits (the "
                "model outputs logits) or --loss probabilities (softmax)"
            )

    from keras_compress import pipeline

    # Its errors name Python arguments; say them in this command's terms.
    with _in_command_terms(
        {
            "`train_data[0]`": "x_train",
            "`train_data[1]`": "y_train",
            "`val_data[0]`": "x_val",
            "`val_data[1]`": "y_val",
            "`output`": "-o",
            "`resume=True`": "--resume",
            "`overwrite=True`": "--overwrite",
            "`max_bytes`": "--max-bytes",
            "`max_latency`": "--max-latency",
        }
    ):
        result = pipeline.compress(
            model,
            train,
            val,
            target=args.target,
            max_accuracy_drop=args.max_drop,
            max_bytes=args.max_bytes,
            max_latency=args.max_latency,
            recipe=args.recipe,
            epochs=args.epochs,
            output=args.output,
            resume=args.resume,
            overwrite=args.overwrite,
            loss=loss,
            distill=not args.no_distill,
            verbose=0 if args.quiet else 1,
        )
    final, original = result.report.final, result.report.original
    latency = (
        f", {final.latency_us:.1f} µs "
        f"({final.latency_us / original.latency_us:.3f}x)"
        if original.latency_us
        else ""
    )
    print(
        f"{result.path}: accuracy {final.file_accuracy:.4f} "
        f"(drop {final.accuracy_drop:+.4f}), {final.bytes:,} bytes "
        f"({final.bytes / original.bytes:.3f}x), {final.gzip_bytes:,} gzip "
        f"bytes ({final.gzip_bytes / original.gzip_bytes:.3f}x){latency}; "
        f"report: {os.path.join(args.output, 'report.md')}"
    )
    # A file over budget is still delivered, but a script must notice.
    return 0 if result.budget_met else 3


@contextlib.contextmanager
def _in_command_terms(replacements):
    """Rewrites the Python API's argument names in a ValueError's message."""
    try:
        yield
    except ValueError as error:
        message = str(error)
        for api_name, command_name in replacements.items():
            message = message.replace(api_name, command_name)
        raise CommandError(message) from error


def _number(text, kind, expected):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {expected}, got {text!r}"
        ) from None


def _positive_int(text):
    value = _number(text, int, "a whole number >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text):
    value = _number(text, int, "a whole number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _budget_text(text):
    # compress() checks the value and names the option when it is wrong.
    from keras_compress.pipeline import budgets

    return budgets.from_text(text)


def _accuracy_drop(text):
    value = _number(text, float, "a number in [0, 1), e.g. 0.01 (one point)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _sparsity(text):
    value = _number(text, float, "a number in (0, 1), e.g. 0.8")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def build_parser():
    """The argument parser of `keras-compress`."""
    from keras_compress import __version__

    parser = argparse.ArgumentParser(
        prog="keras-compress",
        description="Model optimization for Keras 3: prune, quantize, "
        "convert to LiteRT or ONNX and verify.",
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-compress {__version__}"
    )
    parser.add_argument(
        "--native-logs",
        action="store_true",
        help="show TensorFlow's and the LiteRT converter's own log lines "
        "(hidden by default)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train the reference CNN, compress it every way, verify the "
        "LiteRT files and print a table",
        description="Trains the reference CNN on Fashion-MNIST (Debian "
        "package dataset-fashion-mnist; falls back to scikit-learn's digits "
        "or synthetic images), prunes and quantizes it, converts each "
        "variant to LiteRT, runs the files and prints accuracy, size and "
        "latency.",
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=3,
        help="baseline training epochs (default 3)",
    )
    demo.add_argument(
        "--finetune-epochs",
        type=_positive_int,
        default=2,
        help="fine-tuning epochs per compressed variant (default 2)",
    )
    demo.add_argument(
        "--max-train",
        type=_positive_int,
        default=None,
        help="use at most N training images",
    )
    demo.add_argument(
        "--max-test",
        type=_positive_int,
        default=None,
        help="evaluate on at most N test images",
    )
    demo.add_argument(
        "--sparsity",
        type=_sparsity,
        default=0.8,
        help="final sparsity of magnitude pruning (default 0.8)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--latency-runs",
        type=_positive_int,
        default=300,
        help="single-image invocations timed per file",
    )
    demo.add_argument(
        "--data-dir",
        default=None,
        help="folder with the Fashion-MNIST IDX .gz files",
    )
    demo.add_argument(
        "-o",
        "--output",
        default=None,
        help="write each variant's .tflite file and the .keras model it came "
        "from, test.npz and report.json here",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="small subset and fewer epochs (about a minute)",
    )
    demo.add_argument(
        "-q", "--quiet", action="store_true", help="print only the table"
    )
    demo.set_defaults(handler=_demo)

    convert = commands.add_parser(
        "convert",
        help="convert a .keras model to a LiteRT (.tflite) or ONNX file",
        description="Converts a Keras model saved with model.save() to a "
        "LiteRT flatbuffer or an ONNX model, written atomically.",
        epilog=DATA_FORMAT
        + """
examples:
  keras-compress convert model.keras --to tflite --mode dynamic -o m.tflite
  keras-compress convert model.keras --to tflite --mode int8 \\
      --calib calib.npz --int8-io -o model_int8.tflite
  keras-compress convert model.keras --to tflite --mode int8 \\
      --calib calib.npz --precision w4a8 -o model_w4a8.tflite
  keras-compress convert model.keras --to onnx --float16 -o model.onnx
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("model", help="the .keras model file")
    convert.add_argument(
        "--to",
        choices=("tflite", "onnx"),
        default="tflite",
        help="target format (default tflite)",
    )
    convert.add_argument(
        "--mode",
        choices=TFLITE_MODES,
        default=None,
        help="LiteRT mode (default float32): float16 weights, dynamic "
        "(int8 weights), int8 (full integer, needs --calib unless the model "
        "has fake-quant ranges), int16x8 (int16 activations, needs --calib)",
    )
    convert.add_argument(
        "--calib",
        metavar="DATA.npz",
        help="calibration inputs for int8/int16x8 (array x; see below)",
    )
    convert.add_argument(
        "--num-calibration-samples",
        type=_positive_int,
        default=200,
        metavar="N",
        help="calibration samples used (default 200)",
    )
    convert.add_argument(
        "--int8-io",
        action="store_true",
        help="int8 input and output tensors (mode int8 only)",
    )
    convert.add_argument(
        "--sparse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store pruned weights in LiteRT's sparse format (default: "
        "when the kernels are at least 50%% zeros)",
    )
    convert.add_argument(
        "--allow-select-tf-ops",
        action="store_true",
        help="let ops without a LiteRT kernel run as TensorFlow ops "
        "(the file then needs the Flex delegate)",
    )
    convert.add_argument(
        "--precision",
        metavar="SPEC|LAYER=SPEC,...|FILE.json",
        help="per-layer precision through ai-edge-quantizer: one spec for "
        "every layer (w4a8, w8a8, w8a16, w4a16, w8, w4, w8-dynamic, "
        "w4-dynamic, w2-dynamic, float; /b32 etc. for block-wise), "
        "layer=spec pairs, or a JSON file {layer: spec}; other layers get "
        "--mode's precision",
    )
    convert.add_argument(
        "--algorithm",
        choices=("min_max", "mse", "gptq"),
        default=None,
        help="with --precision: weight rounding (default min_max; mse; "
        "gptq: error-compensating rounding of Dense/Conv2D kernels, needs "
        "--calib)",
    )
    convert.add_argument(
        "--activation-range",
        choices=("min_max", "mse"),
        default=None,
        help="with --precision and integer activations: each activation's "
        "range (default min_max, as calibrated; mse: least squared rounding "
        "error, outliers clipped)",
    )
    convert.add_argument(
        "--float16",
        action="store_true",
        help="ONNX: float16 weights and activations, float32 I/O",
    )
    convert.add_argument(
        "--opset",
        type=_positive_int,
        default=None,
        help="ONNX opset (default 17)",
    )
    convert.add_argument(
        "--fixed-batch",
        action="store_true",
        help="ONNX: fixed batch size instead of a dynamic one",
    )
    convert.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (default: the model path with .tflite/.onnx)",
    )
    convert.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing on success",
    )
    convert.set_defaults(handler=_convert)

    verify = commands.add_parser(
        "verify",
        help="run a converted file and compare it with its Keras model",
        description="Runs a .tflite (LiteRT interpreter) or .onnx (ONNX "
        "Runtime) file and the Keras model on the same inputs and prints "
        "accuracy, agreement, output differences, size and latency.",
        epilog=DATA_FORMAT
        + """
With only FILE, the Keras model is FILE's name with .keras (as
`keras-compress demo -o DIR` and `compress -o DIR` write them).

examples:
  keras-compress verify model.keras model.tflite --data test.npz
  keras-compress verify out/qat_int8.tflite --data out/test.npz
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "paths",
        nargs="+",
        metavar="[MODEL.keras] FILE",
        help="the .keras model file (default: FILE's name with .keras) "
        "and the converted .tflite or .onnx file",
    )
    verify.add_argument(
        "--data",
        required=True,
        metavar="DATA.npz",
        help="inputs x and optional labels y (see below)",
    )
    verify.add_argument(
        "--num-threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="interpreter / ONNX Runtime threads (default 1)",
    )
    verify.add_argument(
        "--batch-size",
        type=_positive_int,
        default=256,
        metavar="N",
        help="samples per run (default 256)",
    )
    verify.add_argument(
        "--latency-runs",
        type=_non_negative_int,
        default=300,
        metavar="N",
        help="single-sample runs timed; 0 skips timing (default 300)",
    )
    verify.add_argument(
        "--max-samples",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use only the first N samples of the data",
    )
    verify.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON instead of a table",
    )
    verify.set_defaults(handler=_verify)

    from keras_compress.pipeline import targets

    compress = commands.add_parser(
        "compress",
        help="compress a model to a verified file within accuracy, size and "
        "latency budgets",
        description="Builds a recipe from a per-layer sensitivity scan (or "
        "runs --recipe), prunes and fine-tunes with distillation, trains "
        "quantization-aware for int8, converts, verifies the file and backs "
        "off until the accuracy drop is within --max-drop. With --max-bytes "
        "or --max-latency it searches channels and weight bits per layer "
        "instead, on measured files. Writes the file, "
        "report.md/.html/.json, plots and each stage's model to -o.",
        epilog="""
data: an .npz with x_train, y_train, x_val, y_val (integer labels), or x
and y, of which the last 10 % validates.
exit status: 0 when every budget is met, 3 when one is not (the closest
file is still written, and the report names the budget), 1 on errors.

example:
  keras-compress compress model.keras --data data.npz --target tflite-int8 \\
      --max-drop 0.01 -o out/
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compress.add_argument("model", help="the trained .keras model file")
    compress.add_argument(
        "--data",
        required=True,
        metavar="DATA.npz",
        help="training and validation data (see below)",
    )
    compress.add_argument(
        "--target",
        choices=sorted(targets.TARGETS),
        default="tflite-int8",
        help="file to deliver (default tflite-int8)",
    )
    compress.add_argument(
        "--max-drop",
        type=_accuracy_drop,
        default=0.01,
        metavar="D",
        help="largest accepted accuracy loss, 0.01 = one point (default)",
    )
    compress.add_argument(
        "--max-bytes",
        type=_budget_text,
        default=None,
        metavar="B",
        help="largest file: a fraction of the float32 file (0.12), bytes "
        "(60000) or with a unit (60KB, 1.5MiB); searches channels and bits",
    )
    compress.add_argument(
        "--max-latency",
        type=_budget_text,
        default=None,
        metavar="T",
        help="largest single-thread latency on this machine: a fraction of "
        "the float32 file's (0.25) or with a unit (10ms, 250us)",
    )
    compress.add_argument(
        "--recipe",
        metavar="FILE",
        default=None,
        help="a JSON or YAML recipe to run instead of building one",
    )
    compress.add_argument(
        "--epochs",
        type=_positive_int,
        default=2,
        metavar="N",
        help="fine-tuning epochs per step (default 2)",
    )
    compress.add_argument(
        "--loss",
        choices=("logits", "probabilities"),
        default=None,
        help="training loss when the model was saved without one: sparse "
        "categorical cross-entropy on logits or on probabilities",
    )
    compress.add_argument(
        "--no-distill",
        action="store_true",
        help="fine-tune on the labels alone, without the original as teacher",
    )
    compress.add_argument(
        "--resume",
        action="store_true",
        help="reuse the stage models an earlier run of the same model, "
        "data and options saved in -o",
    )
    compress.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in -o",
    )
    compress.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="output folder"
    )
    compress.add_argument(
        "-q", "--quiet", action="store_true", help="no progress output"
    )
    compress.set_defaults(handler=_compress)
    return parser


# Errors a user can fix (bad file, bad option value, missing package, a
# model the converter cannot express): one line on stderr, no traceback.
_USER_ERRORS = (
    CommandError,
    ValueError,
    TypeError,
    ImportError,
    RuntimeError,
    OSError,
)


def main(argv=None):
    """Entry point of the `keras-compress` console script."""
    args = build_parser().parse_args(argv)
    # TensorFlow's own INFO/WARNING lines, before it is first imported; a
    # user's setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The converters capture their native logs themselves; this also hides
    # what loading and training log, and replays it all for a bug report
    # when a command fails unexpectedly.
    with _native_logs.captured(show=args.native_logs, replay_on_error=True):
        if args.command == "demo":
            return args.handler(args)
        try:
            return args.handler(args)
        except _USER_ERRORS as error:
            print(
                f"keras-compress {args.command}: error: {_first_line(error)}",
                file=sys.stderr,
            )
            return 1


if __name__ == "__main__":
    sys.exit(main())
