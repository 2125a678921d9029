"""Prints the conformance matrix of one backend as a Markdown table.

Runs `tests/conformance` with pytest under the given Keras backend (or reads
an existing JUnit XML report of such a run) and prints one row per model
kind and one column per technique:

- `pass`: the cell trained, stripped, saved, reloaded, converted and its
  file matched the Keras model;
- `error asserted: <reason>`: the library refuses the combination with the
  clear error listed in `test_matrix.UNSUPPORTED`, and the test checked it;
- `FAIL`: anything else (the pytest output says why).

Usage (from anywhere):

    python tests/conformance/coverage_table.py --backend jax
    python tests/conformance/coverage_table.py --backend torch -n 1
    python tests/conformance/coverage_table.py --from-xml report.xml
    python tests/conformance/coverage_table.py --backend jax -- -k nested
    python tests/conformance/coverage_table.py --write-docs

pytest's output goes to standard error, the table to standard output. The
exit status is 0 when every cell passes, 1 otherwise.
"""

import argparse
import ast
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
_CELL = re.compile(r"test_cell\[(?P<kind>[^-\]]+)-(?P<technique>[^\]]+)\]")


def module_literal(path, name):
    """The value of the module-level literal `name` in `path` (read, not
    imported: importing the tests would import Keras in this process)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path.name} has no literal {name}.")


def _reason(pattern):
    """A regex of `UNSUPPORTED` as readable text."""
    text = re.sub(r"\\(.)", r"\1", pattern)
    return text.replace(".*", "...").replace("|", " or ")


def run_pytest(backend, xml_path, workers, extra):
    env = dict(os.environ, KERAS_BACKEND=backend)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/conformance",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml_path}",
    ]
    if workers != 1:
        command += ["-n", str(workers)]
    command += extra
    print(f"$ KERAS_BACKEND={backend} {' '.join(command)}", file=sys.stderr)
    return subprocess.run(
        command, cwd=ROOT, env=env, stdout=sys.stderr, check=False
    ).returncode


def read_results(xml_path):
    """`{(kind, technique): "pass" | "FAIL" | "skipped"}` from JUnit XML."""
    results = {}
    for case in ElementTree.parse(xml_path).iter("testcase"):
        match = _CELL.search(case.get("name", ""))
        if match is None:
            continue
        outcome = "pass"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "FAIL"
            elif child.tag == "skipped" and outcome == "pass":
                outcome = "skipped"
        results[match["kind"], match["technique"]] = outcome
    return results


def table(results, kinds, techniques, unsupported):
    """The Markdown table: a row per kind, a column per technique."""
    lines = [
        "| model kind | " + " | ".join(techniques) + " |",
        "|---|" + "---|" * len(techniques),
    ]
    for kind in kinds:
        cells = []
        for technique in techniques:
            outcome = results.get((kind, technique), "not run")
            if outcome == "pass" and (kind, technique) in unsupported:
                outcome = "error asserted: " + _reason(
                    unsupported[kind, technique]
                )
            cells.append(outcome.replace("|", "\\|"))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DOCS = ROOT / "docs" / "conformance.md"
_BEGIN = "<!-- conformance-matrix:begin -->"
_END = "<!-- conformance-matrix:end -->"


def _literals():
    return (
        module_literal(HERE / "models.py", "KINDS"),
        module_literal(HERE / "test_matrix.py", "TECHNIQUES"),
        module_literal(HERE / "test_matrix.py", "UNSUPPORTED"),
    )


def green_table():
    """The table of a run in which every cell passes.

    CI fails unless every cell passes on TensorFlow (JAX and PyTorch are
    run by hand, see docs/conformance.md), so this is the table the docs
    show.
    """
    kinds, techniques, unsupported = _literals()
    results = {(k, t): "pass" for k in kinds for t in techniques}
    return table(results, kinds, techniques, unsupported)


def docs_table():
    """The table between the markers of `docs/conformance.md`."""
    text = DOCS.read_text()
    return text.split(_BEGIN, 1)[1].split(_END, 1)[0].strip()


def replace_marked(path, begin, end, text):
    """Replaces what stands between the markers `begin` and `end` of the
    file at `path` with `text`."""
    content = path.read_text()
    head, rest = content.split(begin, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def write_docs():
    """Replaces the docs' table with `green_table()`."""
    replace_marked(DOCS, _BEGIN, _END, green_table())


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend of the pytest run (default: $KERAS_BACKEND, "
        "else tensorflow).",
    )
    parser.add_argument(
        "-n",
        "--workers",
        type=int,
        default=2,
        help="pytest-xdist workers; 1 runs without xdist (default 2).",
    )
    parser.add_argument(
        "--junitxml", help="Keep the run's JUnit XML report at this path."
    )
    parser.add_argument(
        "--from-xml",
        help="Do not run pytest: build the table from this JUnit XML report.",
    )
    parser.add_argument(
        "pytest_args",
        nargs="*",
        help="Extra pytest arguments, after `--` (e.g. -- -k functional).",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="Do not run pytest: write the all-green table into "
        "docs/conformance.md (after changing KINDS, TECHNIQUES or "
        "UNSUPPORTED).",
    )
    args = parser.parse_args(argv)

    if args.write_docs:
        write_docs()
        print(f"wrote {DOCS}")
        return 0
    kinds, techniques, unsupported = _literals()

    if args.from_xml:
        results = read_results(args.from_xml)
        title = f"Conformance matrix ({args.from_xml})"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            xml_path = args.junitxml or os.path.join(tmp, "conformance.xml")
            run_pytest(args.backend, xml_path, args.workers, args.pytest_args)
            if not os.path.exists(xml_path):
                print("pytest wrote no report.", file=sys.stderr)
                return 2
            results = read_results(xml_path)
        title = f"Conformance matrix, Keras backend `{args.backend}`"

    print(f"{title}\n")
    print(table(results, kinds, techniques, unsupported))
    outcomes = [results.get((k, t)) for k in kinds for t in techniques]
    return 0 if all(outcome == "pass" for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
