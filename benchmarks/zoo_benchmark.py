"""The architecture zoo: every cell, with its times, memory and float ops.

Runs `tests/zoo` with `KERAS_COMPRESS_ZOO=all` (every architecture of
`tests/zoo/architectures.py` x every technique of `tests/zoo/test_zoo.py`;
CI runs two cells), one pytest process per architecture so that each
process's peak memory is that architecture's, and prints

- the coverage table: a row per architecture, a column per technique
  (`pass`, `error asserted: ...` for a documented limitation, `FAIL`);
- per cell: apply + one training epoch on 32 images (s), conversion (s),
  the file's bytes, the peak memory of the process (MB) and the ops the
  file computes in float.

`--write-docs` puts both into `docs/zoo.md` between its markers. Usage:

    python benchmarks/zoo_benchmark.py                      # every cell
    python benchmarks/zoo_benchmark.py --architectures MobileNetV2
    python benchmarks/zoo_benchmark.py --write-docs
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


def _literal(path, name):
    """Module-level literal `name` of `path`, read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path.name} has no literal {name}.")


def _architectures():
    text = (ZOO / "architectures.py").read_text()
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_BUILDERS"
            for t in node.targets
        ):
            return [key.value for key in node.value.keys]
    raise ValueError("architectures.py has no _BUILDERS.")


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


def coverage_table(cells, architectures, techniques, unsupported):
    lines = [
        "| architecture | " + " | ".join(techniques) + " |",
        "|---|" + "---|" * len(techniques),
    ]
    for architecture in architectures:
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


def detail_table(cells):
    lines = [
        "| cell | apply + 1 epoch (s) | convert (s) | bytes | peak MB "
        "| float ops in the file | failure |",
        "|---|---|---|---|---|---|---|",
    ]
    for (architecture, technique), cell in sorted(cells.items()):
        size = cell.get("bytes")
        figures = [
            cell.get("apply_s", ""),
            cell.get("convert_s", ""),
            f"{int(size):,}" if size else "",
            cell.get("peak_memory_mb", ""),
            cell.get("float_ops", ""),
            cell.get("message", "").replace("|", "/")[:160],
        ]
        lines.append(
            f"| {architecture} {technique} | "
            + " | ".join(str(f) for f in figures)
            + " |"
        )
    return "\n".join(lines)


def write_docs(text):
    content = DOCS.read_text()
    head, rest = content.split(_BEGIN, 1)
    tail = rest.split(_END, 1)[1]
    DOCS.write_text(f"{head}{_BEGIN}\n{text}\n{_END}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--architectures", nargs="*", help="default: all of the zoo"
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    architectures = args.architectures or _architectures()
    techniques = _literal(ZOO / "test_zoo.py", "TECHNIQUES")
    unsupported = _literal(ZOO / "test_zoo.py", "UNSUPPORTED")

    cells = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for architecture in architectures:
            xml_path = os.path.join(tmp, f"{architecture}.xml")
            run_architecture(architecture, xml_path)
            if os.path.exists(xml_path):
                cells.update(read_cells(xml_path))
    minutes = (time.perf_counter() - start) / 60
    text = (
        coverage_table(cells, architectures, techniques, unsupported)
        + "\n\n"
        + detail_table(cells)
        + f"\n\n{len(cells)} cells in {minutes:.0f} min "
        "(`python benchmarks/zoo_benchmark.py`)."
    )
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"wrote {DOCS}", file=sys.stderr)
    passed = sum(cell["outcome"] == "pass" for cell in cells.values())
    return 0 if passed == len(cells) else 1


if __name__ == "__main__":
    sys.exit(main())
