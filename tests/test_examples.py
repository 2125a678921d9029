"""Every script in examples/ runs end to end on a tiny budget.

Each example is run as a user would run it (as `__main__`, from the
repository root, with command-line arguments) with a small subset of the
data and one epoch.
The tests check the exit status, the figures each example prints (the
verification of its converted files) and the files it writes.
"""

import contextlib
import io
import os
import pathlib
import re
import runpy
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TINY = ["--max-train", "1000", "--epochs", "1"]


def run_example(name, *args):
    """Runs examples/<name>.py as `__main__`; returns its standard output.

    In this process, not a subprocess: each example would otherwise spend
    several seconds importing TensorFlow again, for no difference in what
    runs (the script's own `if __name__ == "__main__"` block, with these
    command-line arguments, from the repository root).
    """
    stdout = io.StringIO()
    argv, cwd = sys.argv, os.getcwd()
    sys.argv = [str(EXAMPLES / f"{name}.py"), *args]
    try:
        os.chdir(REPO)
        with contextlib.redirect_stdout(stdout):
            runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code in (0, None), (
            f"examples/{name}.py exited with {exit_.code}:\n"
            f"{stdout.getvalue()[-3000:]}"
        )
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return stdout.getvalue()


def verifications(text):
    """The `VerificationReport`s an example printed, as dicts of figures."""
    reports = []
    for block in text.split("Verification on ")[1:]:
        accuracy = re.search(
            r"accuracy +keras ([\d.]+)%, file ([\d.]+)%", block
        )
        agreement = re.search(r"agreement +([\d.]+)%", block)
        size = re.search(r"size +([\d,]+) bytes", block)
        float_ops = re.search(r"float ops +(.*)", block)
        assert accuracy and agreement and size and float_ops, block
        reports.append(
            {
                "keras_accuracy": float(accuracy.group(1)) / 100,
                "file_accuracy": float(accuracy.group(2)) / 100,
                "agreement": float(agreement.group(1)) / 100,
                "bytes": int(size.group(1).replace(",", "")),
                "float_ops": float_ops.group(1).strip(),
            }
        )
    return reports


def test_every_example_is_tested():
    scripts = {path.stem for path in EXAMPLES.glob("*.py")}
    tested = {
        name[len("test_") :]
        for name in globals()
        if name.startswith("test_") and name != "test_every_example_is_tested"
    }
    assert scripts <= tested, f"examples without a test: {scripts - tested}"


def test_prune_cnn(tmp_path):
    text = run_example("prune_cnn", *TINY, "--output", str(tmp_path))
    dense, pruned = verifications(text)
    # Float files compute what Keras computes.
    for report in (dense, pruned):
        assert report["agreement"] > 0.99
        assert report["file_accuracy"] == pytest.approx(
            report["keras_accuracy"], abs=0.01
        )
    total = re.search(r"^total +[\d,]+ +([\d.]+)%", text, re.MULTILINE)
    assert total and float(total.group(1)) > 75
    # The sparse format stores the 80 %-pruned model in far fewer bytes.
    assert pruned["bytes"] < 0.5 * dense["bytes"]
    assert (tmp_path / "pruned.tflite").stat().st_size == pruned["bytes"]


def test_qat_int8(tmp_path):
    text = run_example(
        "qat_int8", *TINY, "--max-test", "500", "--output", str(tmp_path)
    )
    float32, ptq, qat = verifications(text)
    assert float32["file_accuracy"] == pytest.approx(
        float32["keras_accuracy"], abs=0.01
    )
    # Both int8 files run integer kernels only and are about 4x smaller.
    for report in (ptq, qat):
        assert report["float_ops"].startswith("none"), report
        assert report["bytes"] < 0.35 * float32["bytes"]
    # The QAT file computes what its Keras model computes.
    assert qat["agreement"] > 0.95
    assert "warning: some operators still compute in float" not in text
    for name in ("float32", "ptq_int8", "qat_int8"):
        assert (tmp_path / f"{name}.tflite").stat().st_size > 0


def test_distill_student():
    text = run_example("distill_student", *TINY)
    # The default recipe, with its automatic hint on the layers that feed
    # the two classifiers.
    assert "'name': 'default'" in text
    assert re.search(r"'automatic_hint': '\w+->\w+'", text)
    for label in ("teacher", "student alone"):
        assert re.search(rf"{label} test accuracy: [\d.]+", text), label
    ratio = re.search(r"\((\d+)x fewer\)", text)
    assert ratio and int(ratio.group(1)) >= 2
    (student,) = verifications(text)
    assert student["agreement"] > 0.99


def test_compress_to_budget(tmp_path):
    output = tmp_path / "out"
    # A loose budget (a drop can't exceed the original accuracy, well
    # below 0.9 after one epoch on 1000 images): the first try meets it.
    text = run_example(
        "compress_to_budget",
        *TINY,
        "--max-test",
        "300",
        "--max-accuracy-drop",
        "0.9",
        "--latency-runs",
        "3",
        "--output",
        str(output),
    )
    assert "# Compression report (tflite-int8)" in text
    assert "| try | stage | target |" in text
    assert "budget met: True" in text
    assert "Try 1/" in text and "Try 2/" not in text
    assert f"file: {output / 'model.tflite'}" in text
    assert f"report: {output / 'report.md'}" in text
    for name in ("model.tflite", "report.md", "report.json", "recipe.json"):
        assert (output / name).stat().st_size > 0, name
    assert list((output / "stages").glob("*.keras"))


def test_export_onnx(tmp_path):
    text = run_example(
        "export_onnx",
        *TINY,
        "--max-test",
        "500",
        "--float16",
        "--output",
        str(tmp_path),
    )
    float32, float16 = verifications(text)
    for report in (float32, float16):
        assert report["agreement"] > 0.98
        assert report["file_accuracy"] == pytest.approx(
            report["keras_accuracy"], abs=0.02
        )
    assert float16["bytes"] < 0.6 * float32["bytes"]
    # The batch dimension is free.
    assert "output for 7 images: shape (7, 10)" in text
    for name in ("model.onnx", "model_float16.onnx"):
        assert (tmp_path / name).stat().st_size > 0
