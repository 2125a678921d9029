"""`keras-compress demo` end to end on a small subset, and its pieces."""

import json
import re

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
                "512",
                "--max-test",
                "128",
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


def test_demo_end_to_end(demo_run, capsys):
    # One test for the one (100 s) demo run: two tests using the module
    # fixture would each run it, once per pytest-xdist worker.
    _check_rows_printed(demo_run)
    _check_drops_against_same_training(demo_run)
    _check_files_verified(demo_run)
    _check_files_named_and_verifiable(demo_run, capsys)


FINE_TUNED = {
    "pruned 80% (sparse)",
    "pruned 2:4 (sparse)",
    "pruned 80% + int8",
    "pruned 80% + int8 (sparse)",
    "QAT int8",
    "channels pruned 50%",
    "low-rank dense 25%",
    "compress() int8, 1 point",
}


def _check_rows_printed(demo_run):
    text, report, _ = demo_run
    variants = [row["variant"] for row in report["rows"]]
    assert variants[0] == "float32"
    assert {
        "float32 fine-tuned",
        "int8 PTQ",
        "distilled student",
        *FINE_TUNED,
    } <= set(variants)
    for variant in variants:
        assert variant in text
    assert "gzip x" in text.splitlines()[1]
    # Each group's heading says what its drops are measured against.
    assert "Drop vs float32:" in text
    assert "Drop vs float32 fine-tuned 1 epoch(s) the same way" in text
    # The legend explains every column and the compress() row.
    legend = text[text.index("keras acc, file acc:") :]
    for column in ("drop:", "bytes, gzip:", "gzip x:", "latency:"):
        assert f"\n{column}" in legend, column
    assert "\nsparsity:" in legend
    words = " ".join(legend.split())
    assert "compress() int8, 1 point: kc.compress(" in words
    assert "max_accuracy_drop=0.01" in words
    assert "keras-compress verify" in words


def _check_drops_against_same_training(demo_run):
    text, report, _ = demo_run
    rows = {row["variant"]: row for row in report["rows"]}
    assert report["finetune_epochs"] == 1
    for name in ("float32", "float32 fine-tuned"):
        assert rows[name]["reference"] is None
        assert rows[name]["drop"] is None
    for variant, row in rows.items():
        if row["reference"] is None:
            continue
        expected = "float32 fine-tuned" if variant in FINE_TUNED else "float32"
        assert row["reference"] == expected, variant
        assert row["drop"] == pytest.approx(
            rows[expected]["file_accuracy"] - row["file_accuracy"]
        )
        line = next(
            line for line in text.splitlines() if line.startswith(variant)
        )
        assert f"{row['drop']:+.4f}" in line, line
    # The sentence about compress() quotes the table's figure.
    compressed = rows["compress() int8, 1 point"]
    words = " ".join(text.split())
    assert (
        f"{demo.describe_drop(compressed['drop'])} against float32 "
        "fine-tuned (the drop column)"
    ) in words


def _check_files_verified(demo_run):
    _, report, output = demo_run
    rows = {row["variant"]: row for row in report["rows"]}
    # A float32 file computes what Keras computes.
    for name in ("float32", "float32 fine-tuned"):
        assert rows[name]["file_accuracy"] == pytest.approx(
            rows[name]["keras_accuracy"]
        )
    # Quantized files may flip a few of the 128 borderline images.
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
    assert not list(output.glob("*.tmp*"))  # atomic writes left no debris


def _check_files_named_and_verifiable(demo_run, capsys):
    _, report, output = demo_run
    stems = {demo.file_stem(row["variant"]) for row in report["rows"]}
    assert {"pruned_80_sparse", "compress_int8_1_point", "qat_int8"} <= stems
    assert len(stems) == len(report["rows"])
    for stem in stems:
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", stem), stem
    assert {p.stem for p in output.glob("*.tflite")} == stems
    assert {p.stem for p in output.glob("*.keras")} == stems
    for row in report["rows"]:
        assert row["file"] == str(
            output / f"{demo.file_stem(row['variant'])}.tflite"
        )
    # The files check again from the command line, with the same figures
    # (QAT and compress() keep training wrappers in their .keras files).
    rows = {demo.file_stem(row["variant"]): row for row in report["rows"]}
    for stem in ("qat_int8", "compress_int8_1_point"):
        capsys.readouterr()
        # The model beside the file is found without naming it.
        model = [str(output / f"{stem}.keras")] if stem == "qat_int8" else []
        status = cli.main(
            [
                "verify",
                *model,
                str(output / f"{stem}.tflite"),
                "--data",
                str(output / "test.npz"),
                "--latency-runs",
                "0",
            ]
        )
        printed = capsys.readouterr().out
        assert status == 0, printed
        assert "Verification on 128 samples" in printed
        assert (
            f"keras {rows[stem]['keras_accuracy']:.2%}, "
            f"file {rows[stem]['file_accuracy']:.2%}"
        ) in printed


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1)])
def test_reference_cnn_accepts_demo_image_sizes(shape):
    model = demo.reference_cnn(shape, num_classes=10)
    out = model.predict(np.zeros((2, *shape), "float32"), verbose=0)
    assert out.shape == (2, 10)


def test_format_table_gives_ratios_to_the_first_row_and_a_legend():
    rows = [
        demo.DemoRow("a", 0.9, 0.9, 1000, 800, 50.0, 0.0, section="-- A:"),
        demo.DemoRow(
            "b", 0.9, 0.89, 500, 200, 40.0, 0.8, reference="a", drop=0.01
        ),
        demo.DemoRow(
            "c",
            0.9,
            0.92,
            500,
            200,
            40.0,
            0.8,
            reference="a",
            drop=-0.02,
            note="what c is.",
        ),
    ]
    lines = demo.format_table(rows).splitlines()
    assert lines[2] == "-- A:"
    assert lines[3].split()[3:7] == ["ref", "1,000", "800", "1.00x"]
    assert lines[4].split()[3:7] == ["+0.0100", "500", "200", "0.25x"]
    assert lines[5].split()[3] == "-0.0200"
    assert "80.0%" in lines[4]
    assert "c: what c is." in lines
    assert not any("keras-compress verify" in line for line in lines)


def test_file_stem_and_drop_words():
    assert demo.file_stem("compress() int8, 1 point") == "compress_int8_1_point"
    assert demo.file_stem("pruned 80% + int8 (sparse)") == (
        "pruned_80_int8_sparse"
    )
    assert demo.file_stem("low-rank dense 25%") == "low_rank_dense_25"
    assert demo.describe_drop(0.0055) == "drops 0.0055"
    assert demo.describe_drop(-0.101) == "gains 0.1010"


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as error:
        cli.main(["demo", "--sparsity", "1.5"])
    assert error.value.code == 2
    assert "must be in (0, 1)" in capsys.readouterr().err
