"""The README works as written: its quick starts run, its commands hold.

The ```python blocks run in order, in one namespace, in a temporary folder:
the README says so, and its first block makes the model and data the others
use. The shell commands (```bash blocks and inline `code` that starts with a
command) are checked without running them: `pip install` extras exist in
pyproject.toml, `keras-compress` command lines parse, the scripts and files
they name exist, and the test command is the one CI runs.
"""

import os
import pathlib
import re
import shlex

import pytest

from keras_compress import cli

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = pathlib.Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Programs whose command lines the README may show; anything else is an
# unknown command and fails the test, so that a new one gets a check.
COMMANDS = ("pip", "keras-compress", "python", "bash", "mkdocs", "apt-get")


def blocks(language):
    """`(line number, code)` of the README's fenced blocks in `language`."""
    return [
        (README.count("\n", 0, match.start()) + 2, match.group(2))
        for match in FENCE.finditer(README)
        if match.group(1) == language
    ]


def command_lines():
    """Every shell command line of the README, as `(where, text)`."""
    lines = []
    for number, code in blocks("bash"):
        for offset, line in enumerate(code.splitlines()):
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append((f"README.md:{number + offset}", line))
    prose = FENCE.sub("", README)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if span.split(" ")[0] in COMMANDS and " " in span:
            lines.append((f"`{span}`", span))
    return lines


def pyproject():
    with open(REPO / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def test_python_quick_starts_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    snippets = blocks("python")
    assert len(snippets) >= 4  # setup, pruning, QAT, compress
    for number, code in snippets:
        exec(compile(code, f"README.md:{number}", "exec"), namespace)
    # What the snippets promise.
    import keras_compress as kc

    assert os.path.getsize("pruned.tflite") < 0.4 * len(
        kc.convert.to_tflite(namespace["model"])
    )  # "sparse format: ~0.3x bytes"
    assert kc.analysis.sparsity_report(namespace["small"]).total_sparsity > 0.7
    assert os.path.isfile("model_int8.tflite")
    assert os.path.isfile("out/model.tflite")
    assert os.path.isfile("out/report.md")


def test_shell_commands_are_consistent_with_the_project():
    extras = set(pyproject()["project"]["optional-dependencies"])
    ci_script = (REPO / ".ci" / "run").read_text()
    lines = command_lines()
    programs = {shlex.split(line)[0] for _, line in lines}
    # The two commands, the test command and the docs command are there.
    assert {"pip", "keras-compress", "bash", "python", "mkdocs"} <= programs
    for where, line in lines:
        for command in " ".join(shlex.split(line, comments=True)).split("&&"):
            words = shlex.split(command)
            _check_command(where, words, extras, ci_script)


def _check_command(where, words, extras, ci_script):
    program, arguments = words[0], words[1:]
    if program == "pip":
        assert arguments[:2] == ["install", "-e"], where
        match = re.fullmatch(r"\.\[([\w,-]+)\]", arguments[2])
        assert match, where
        assert set(match.group(1).split(",")) <= extras, where
    elif program == "keras-compress":
        try:
            cli.build_parser().parse_args(arguments)
        except SystemExit as error:
            pytest.fail(f"{where}: does not parse ({error})")
    elif program == "python" and arguments[:2] == ["-m", "pytest"]:
        assert " ".join(words) in ci_script, f"{where}: not what CI runs"
    elif program in ("python", "bash"):
        assert (REPO / arguments[0]).is_file(), where
    elif program == "mkdocs":
        assert (REPO / "mkdocs.yml").is_file(), where
        docs = pyproject()["project"]["optional-dependencies"]["docs"]
        assert any(d.startswith("mkdocs") for d in docs), where
    elif program == "apt-get":
        assert arguments[-1] in ci_script, where
    else:
        pytest.fail(f"{where}: unknown command {program!r}; add a check")


def test_extras_listed_are_the_projects():
    paragraph = README[README.index("Extras:") :].split("\n\n")[0]
    listed = set(re.findall(r"`([a-z]+)`", paragraph))
    assert listed == set(pyproject()["project"]["optional-dependencies"])


def test_linked_files_exist():
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if not re.match(r"\w+://", target):
            path = target.split("#")[0]
            assert (REPO / path).exists(), target
