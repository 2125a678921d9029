"""`keras-compress demo` end to end on a small subset, and its pieces."""

import json

import numpy as np
import pytest

from keras_compress import cli
from keras_compress import demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One small demo run through the command line: (stdout, report)."""
    import contextlib
    import io

    output = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = cli.main(
            [
                "demo",
                "-q",
                "--max-train",
                "1024",
                "--max-test",
                "256",
                "--epochs",
                "1",
                "--finetune-epochs",
                "1",
                "--latency-runs",
                "3",
                "-o",
                str(output),
            ]
        )
    assert status == 0
    report = json.loads((output / "report.json").read_text())
    return stdout.getvalue(), report, output


def test_demo_end_to_end(demo_run):
    # One test for the one (100 s) demo run: two tests using the module
    # fixture would each run it, once per pytest-xdist worker.
    _check_rows_printed(demo_run)
    _check_files_verified(demo_run)


def _check_rows_printed(demo_run):
    text, report, _ = demo_run
    variants = [row["variant"] for row in report["rows"]]
    assert variants[0] == "float32"
    assert {
        "int8 PTQ",
        "pruned 80% (sparse)",
        "pruned 2:4 (sparse)",
        "QAT int8",
        "distilled student",
        "channels pruned 50%",
        "low-rank dense 25%",
        "compress() int8, 1 point",
    } <= set(variants)
    for variant in variants:
        assert variant in text
    assert "gzip x" in text.splitlines()[1]


def _check_files_verified(demo_run):
    _, report, output = demo_run
    rows = {row["variant"]: row for row in report["rows"]}
    # A float32 file computes what Keras computes.
    assert rows["float32"]["file_accuracy"] == pytest.approx(
        rows["float32"]["keras_accuracy"]
    )
    # Quantized files may flip a few of the 256 borderline images.
    for variant, row in rows.items():
        assert abs(row["file_accuracy"] - row["keras_accuracy"]) < 0.05, variant
        assert row["latency_us"] > 0
    assert rows["pruned 80% (sparse)"]["sparsity"] > 0.75
    assert rows["pruned 2:4 (sparse)"]["sparsity"] > 0.45
    assert (
        rows["pruned 80% (sparse)"]["gzip_bytes"]
        < 0.5 * rows["float32"]["gzip_bytes"]
    )
    assert rows["int8 PTQ"]["bytes"] < 0.35 * rows["float32"]["bytes"]
    assert rows["QAT int8"]["bytes"] < 0.35 * rows["float32"]["bytes"]
    assert rows["distilled student"]["bytes"] < 0.5 * rows["float32"]["bytes"]
    # Half the channels of each layer: about a quarter of the weights.
    assert rows["channels pruned 50%"]["bytes"] < 0.4 * rows["float32"]["bytes"]
    assert rows["low-rank dense 25%"]["bytes"] < 0.5 * rows["float32"]["bytes"]
    compressed = rows["compress() int8, 1 point"]
    assert compressed["bytes"] < 0.35 * rows["float32"]["bytes"]
    files = sorted(p.name for p in output.glob("*.tflite"))
    assert len(files) == len(rows)
    assert not list(output.glob("*.tmp*"))  # atomic writes left no debris


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1)])
def test_reference_cnn_accepts_demo_image_sizes(shape):
    model = demo.reference_cnn(shape, num_classes=10)
    out = model.predict(np.zeros((2, *shape), "float32"), verbose=0)
    assert out.shape == (2, 10)


def test_format_table_gives_ratios_to_the_first_row():
    rows = [
        demo.DemoRow("a", 0.9, 0.9, 1000, 800, 50.0, 0.0),
        demo.DemoRow("b", 0.9, 0.89, 500, 200, 40.0, 0.8),
    ]
    lines = demo.format_table(rows).splitlines()
    assert lines[2].split()[5] == "1.00x"
    assert lines[3].split()[5] == "0.25x"
    assert "80.0%" in lines[3]


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as error:
        cli.main(["demo", "--sparsity", "1.5"])
    assert error.value.code == 2
    assert "must be in (0, 1)" in capsys.readouterr().err
