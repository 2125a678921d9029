"""The architecture zoo: every cell, with its times, memory and float ops.

Runs `tests/zoo` with `KERAS_COMPRESS_ZOO=all` (every architecture of
`tests/zoo/architectures.py` x every technique of `tests/zoo/test_zoo.py`;
CI runs a few cells), one pytest process per architecture so that each
process's peak memory is that architecture's, and prints

- the coverage table: a row per architecture, a column per technique
  (`pass`, `error asserted: ...` for a documented limitation, `FAIL`);
- per cell: apply + one training epoch on 32 images (s), conversion (s),
  the file's bytes, the peak memory of the process (MB) and the ops the
  file computes in float.

`--write-docs` puts both into `docs/zoo.md` between its markers, keeping
the rows of the architectures this run leaves out. Usage:

    python benchmarks/zoo_benchmark.py                      # every cell
    python benchmarks/zoo_benchmark.py --architectures MobileNetV2
    python benchmarks/zoo_benchmark.py --write-docs
    python benchmarks/zoo_benchmark.py --resnet224   # full-size timing
    python benchmarks/zoo_benchmark.py --tfmot       # QAT side by side

`--tfmot` (needs `pip install -e .[bench]`) runs QAT int8 of MobileNetV2,
MobileNetV3Small and EfficientNetV2B0 with keras_compress (Keras 3) and
with tfmot (`tf_keras.applications`, in a worker process), one epoch each
on the zoo's images, and lists the ops each file computes in float.
"""

import argparse
import ast
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

ROOT = pathlib.Path(__file__).resolve().parents[1]
ZOO = ROOT / "tests" / "zoo"
DOCS = ROOT / "docs" / "zoo.md"
_BEGIN = "<!-- zoo-table:begin -->"
_END = "<!-- zoo-table:end -->"

# The conformance matrix's table script: how a table is read from the test
# files and written into the docs.
sys.path.insert(0, str(ROOT))
from tests.conformance.coverage_table import module_literal  # noqa: E402
from tests.conformance.coverage_table import replace_marked  # noqa: E402


def _architectures():
    text = (ZOO / "architectures.py").read_text()
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_ARCHITECTURES"
            for t in node.targets
        ):
            return [key.value for key in node.value.keys]
    raise ValueError("architectures.py has no _ARCHITECTURES.")


def run_architecture(architecture, xml_path):
    env = dict(os.environ, KERAS_COMPRESS_ZOO="all")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/zoo/test_zoo.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        f"{architecture}-",
        f"--junitxml={xml_path}",
    ]
    print(f"$ {' '.join(command)}", file=sys.stderr, flush=True)
    subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr, check=False)


def read_cells(xml_path):
    """`{(architecture, technique): {"outcome": ..., property: value}}`."""
    cells = {}
    for case in ElementTree.parse(xml_path).iter("testcase"):
        name = case.get("name", "")
        if not name.startswith("test_cell["):
            continue
        architecture, technique = name[len("test_cell[") : -1].split("-", 1)
        cell = {"outcome": "pass", "seconds": float(case.get("time", 0))}
        for child in case:
            if child.tag in ("failure", "error"):
                cell["outcome"] = "FAIL"
                cell["message"] = (child.get("message") or "").splitlines()[0]
            elif child.tag == "properties":
                for prop in child:
                    cell[prop.get("name")] = prop.get("value")
        cells[architecture, technique] = cell
    return cells


def previous_rows():
    """`{architecture: [row, ...]}` of both tables now in the docs, to keep
    the rows of architectures a run leaves out."""
    text = DOCS.read_text().split(_BEGIN, 1)[1].split(_END, 1)[0]
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(
            ("| architecture ", "| cell ")
        ):
            first = line[2:].split(" |", 1)[0]
            rows.setdefault(first.split(" ")[0], []).append(line)
    return rows


def coverage_table(cells, architectures, techniques, unsupported):
    lines = [
        "| architecture | " + " | ".join(techniques) + " |",
        "|---|" + "---|" * len(techniques),
    ]
    kept = previous_rows()
    run = {architecture for architecture, _ in cells}
    for architecture in architectures:
        if architecture not in run and architecture in kept:
            lines.append(kept[architecture][0])  # not rerun this time
            continue
        row = []
        for technique in techniques:
            cell = cells.get((architecture, technique))
            outcome = cell["outcome"] if cell else "not run"
            if outcome == "pass" and (architecture, technique) in unsupported:
                outcome = "error asserted: " + unsupported[
                    architecture, technique
                ].replace("\\", "")
            row.append(outcome.replace("|", "\\|"))
        lines.append(f"| {architecture} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def detail_table(cells, architectures):
    lines = [
        "| cell | apply + 1 epoch (s) | convert (s) | bytes | peak MB "
        "| float ops in an int8 file | failure |",
        "|---|---|---|---|---|---|---|",
    ]
    kept = previous_rows()
    rows = []
    run = {architecture for architecture, _ in cells}
    for architecture in architectures:
        if architecture not in run:
            rows.extend(kept.get(architecture, [])[1:])
    for (architecture, technique), cell in sorted(cells.items()):
        size = cell.get("bytes")
        figures = [
            cell.get("apply_s", ""),
            cell.get("convert_s", ""),
            f"{int(size):,}" if size else "",
            cell.get("peak_memory_mb", ""),
            # Of an int8 file; a float file computes everything in float.
            cell.get("float_ops", "") if "within_one_step" in cell else "",
            cell.get("message", "").replace("|", "/")[:160],
        ]
        rows.append(
            f"| {architecture} {technique} | "
            + " | ".join(str(f) for f in figures)
            + " |"
        )
    return "\n".join(lines + sorted(rows))


def full_size_resnet():
    """ResNet50V2 at 224x224: prune-wrap / QAT-wrap, strip, convert and
    verify, timed step by step (no training; the QAT model runs one
    forward pass in training mode so that its observers have ranges).
    Runs in this process; returns Markdown lines."""
    import keras
    import numpy as np

    import keras_compress as kc

    def peak_mb():
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    x = np.random.default_rng(0).uniform(0, 255, (4, 224, 224, 3))
    x = x.astype("float32")
    lines = [
        "| ResNet50V2 224x224 | wrap (s) | strip (s) | convert (s) "
        "| verify, 4 images (s) | total (s) | process peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for technique in ("prune", "qat"):
        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50V2(weights=None)
        times = []
        start = time.perf_counter()
        if technique == "prune":
            wrapped = kc.pruning.prune_low_magnitude(
                model,
                pruning_schedule=kc.pruning.ConstantSparsity(0.5, 0),
            )
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
            deployable, mode = kc.pruning.strip_pruning(wrapped), "float32"
        else:
            wrapped = kc.quantization.quantize_model(model)
            times.append(time.perf_counter() - start)
            wrapped(x[:2], training=True)  # observers see one batch
            start = time.perf_counter()
            deployable, mode = wrapped, "int8"
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        content = kc.convert.to_tflite(deployable, mode, verbose=0)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        kc.convert.verify(deployable, content, x, latency_runs=0)
        times.append(time.perf_counter() - start)
        cells = [f"{t:.1f}" for t in times] + [
            f"{sum(times):.1f}",
            f"{peak_mb():,.0f}",
        ]
        lines.append(f"| {technique} | " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


_TFMOT_ARCHITECTURES = ("MobileNetV2", "MobileNetV3Small", "EfficientNetV2B0")


def qat_side_by_side():
    """QAT int8 files of keras_compress and tfmot, their float ops.
    Returns Markdown lines."""
    import json
    import shlex

    from keras_compress import convert
    from keras_compress.convert.verify import float_ops
    from tests.conformance import test_matrix
    from tests.zoo import architectures

    lines = [
        "| architecture | keras_compress: float ops | bytes "
        "| tfmot: float ops | bytes |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        worker = ROOT / "benchmarks" / "_tfmot_zoo_worker.py"
        command = [
            sys.executable,
            str(worker),
            "--out-dir",
            tmp,
            *_TFMOT_ARCHITECTURES,
        ]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
        env.pop("KERAS_BACKEND", None)
        print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
        subprocess.run(command, env=env, check=True, stdout=sys.stderr)
        with open(os.path.join(tmp, "report.json")) as f:
            tfmot = json.load(f)
        for name in _TFMOT_ARCHITECTURES:
            model, x, y = architectures.build(name)
            ours = convert.to_tflite(
                test_matrix.qat(model, x, y).model, "int8", verbose=0
            )
            theirs = tfmot[name]
            if "file" in theirs:
                content = pathlib.Path(theirs["file"]).read_bytes()
                their_ops = _ops_cell(float_ops(content))
                their_bytes = f"{len(content):,}"
            else:
                their_ops = "fails: " + theirs["error"].replace("|", "/")
                their_bytes = ""
            row = [
                name,
                _ops_cell(float_ops(ours)),
                f"{len(ours):,}",
                their_ops,
                their_bytes,
            ]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def _ops_cell(ops):
    if not ops:
        return "none"
    counts = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(counts.items()))
    return f"{len(ops)}: {listed}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--architectures", nargs="*", help="default: all of the zoo"
    )
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--junit-dir",
        help="keep each architecture's JUnit XML report in this folder",
    )
    parser.add_argument(
        "--from-junit-dir",
        help="run nothing: build the tables from the reports in this folder "
        "(e.g. of several runs side by side, one per core)",
    )
    parser.add_argument(
        "--resnet224",
        action="store_true",
        help="run nothing else: time ResNet50V2 at 224x224 through "
        "prune/QAT wrapping, conversion and verification",
    )
    parser.add_argument(
        "--tfmot",
        action="store_true",
        help="run nothing else: QAT int8 of MobileNetV2, MobileNetV3Small "
        "and EfficientNetV2B0 with keras_compress and with tfmot, side by "
        "side (needs the bench extra)",
    )
    args = parser.parse_args(argv)
    if args.tfmot:
        print("\n".join(qat_side_by_side()))
        return 0
    if args.resnet224:
        print("\n".join(full_size_resnet()))
        return 0
    architectures = args.architectures or _architectures()
    techniques = module_literal(ZOO / "test_zoo.py", "TECHNIQUES")
    unsupported = module_literal(ZOO / "test_zoo.py", "UNSUPPORTED")

    cells = {}
    if args.from_junit_dir:
        for path in sorted(pathlib.Path(args.from_junit_dir).glob("*.xml")):
            cells.update(read_cells(path))
        architectures = args.architectures or _architectures()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.junit_dir or tmp
            os.makedirs(folder, exist_ok=True)
            for architecture in architectures:
                xml_path = os.path.join(folder, f"{architecture}.xml")
                run_architecture(architecture, xml_path)
                if os.path.exists(xml_path):
                    cells.update(read_cells(xml_path))
    minutes = sum(cell["seconds"] for cell in cells.values()) / 60
    text = (
        coverage_table(cells, architectures, techniques, unsupported)
        + "\n\n"
        + detail_table(cells, architectures)
        + f"\n\nThis run: {len(cells)} cells, {minutes:.0f} min of test time "
        "(`python benchmarks/zoo_benchmark.py`); the rows of architectures "
        "it did not run are those of the previous run."
    )
    print(text)
    if args.write_docs:
        replace_marked(DOCS, _BEGIN, _END, text)
        print(f"wrote {DOCS}", file=sys.stderr)
    passed = sum(cell["outcome"] == "pass" for cell in cells.values())
    return 0 if passed == len(cells) else 1


if __name__ == "__main__":
    sys.exit(main())
