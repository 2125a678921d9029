"""Tests of the `keras-compress convert`, `verify` and `compress` commands.

`main([...])` runs in-process on files under `tmp_path`; every written
file is checked by running it (`verify`) rather than by its name.
"""

import json

import keras
import numpy as np
import pytest

from keras_compress import cli
from keras_compress import convert
from tests.convert.conftest import sequential_model
from tests.convert.conftest import toy_data
from tests.convert.conftest import trained


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained `.keras` model and `.npz` data files next to it."""
    folder = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    x_train, y_train = toy_data(256, seed=1)
    model = trained(sequential_model(), x_train, y_train)
    model.save(folder / "model.keras")
    x_test, y_test = toy_data(64, seed=2)
    np.savez(folder / "calib.npz", x=x_train[:50])
    np.savez(folder / "test.npz", x=x_test, y=y_test)
    return folder


def _run(capsys, *argv):
    """(exit status, stdout, stderr) of `keras-compress argv...`."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _verify_json(capsys, folder, path):
    status, out, err = _run(
        capsys,
        "verify",
        folder / "model.keras",
        path,
        "--data",
        folder / "test.npz",
        "--latency-runs",
        5,
        "--json",
    )
    assert status == 0, err
    return json.loads(out)


def test_convert_tflite_int8_and_verify(files, capsys):
    out_path = files / "int8.tflite"
    status, out, err = _run(
        capsys,
        "convert",
        files / "model.keras",
        "--mode",
        "int8",
        "--calib",
        files / "calib.npz",
        "--int8-io",
        "-o",
        out_path,
    )
    assert status == 0, err
    assert f"Wrote {out_path}: LiteRT int8, int8 I/O" in out
    assert out_path.read_bytes()[4:8] == b"TFL3"
    status, out, err = _run(
        capsys,
        "verify",
        files / "model.keras",
        out_path,
        "--data",
        files / "test.npz",
        "--latency-runs",
        5,
        "--num-threads",
        2,
    )
    assert status == 0, err
    assert "tflite file" in out and "2 threads" in out
    assert "agreement" in out and "accuracy" in out


def test_convert_with_per_layer_precision(files, capsys):
    model = keras.saving.load_model(files / "model.keras")
    first, *_, last = [layer.name for layer in model.layers if layer.weights]
    (files / "precision.json").write_text(json.dumps({first: "float"}))
    for precision, expected in (
        ("w4a8", {first: "int4", last: "int4"}),
        (f"{last}=w4,{first}=w8", {first: "int8", last: "int4"}),
        (files / "precision.json", {first: "float32", last: "int8"}),
    ):
        out_path = files / "w4a8.tflite"
        status, out, err = _run(
            capsys,
            "convert",
            files / "model.keras",
            "--mode",
            "int8",
            "--calib",
            files / "calib.npz",
            "--precision",
            precision,
            "-o",
            out_path,
        )
        assert status == 0, err
        assert "LiteRT int8, per-layer precision" in out
        assert "  weights: " in out
        stored = {t.layer: t.dtype for t in convert.weight_tensors(out_path)}
        assert {k: stored[k] for k in expected} == expected
    report = _verify_json(capsys, files, out_path)
    assert report["agreement"] >= 0.9
    assert {w["layer"] for w in report["weights"]} >= set(expected)


def test_convert_float32_default_output_matches_keras(files, capsys):
    status, out, err = _run(capsys, "convert", files / "model.keras", "-q")
    assert status == 0, err
    assert out == ""
    report = _verify_json(capsys, files, files / "model.tflite")
    assert report["file_format"] == "tflite"
    assert report["max_abs_diff"] < 1e-5
    assert report["agreement"] == 1.0
    assert report["keras_accuracy"] > 0.9


def test_convert_onnx_float16_and_verify(files, capsys):
    out_path = files / "half.onnx"
    status, out, err = _run(
        capsys,
        "convert",
        files / "model.keras",
        "--to",
        "onnx",
        "--float16",
        "-o",
        out_path,
    )
    assert status == 0, err
    assert "ONNX (float16 inside)" in out
    report = _verify_json(capsys, files, out_path)
    assert report["file_format"] == "onnx"
    assert report["agreement"] >= 0.97
    assert report["num_samples"] == 64


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--mode", "int8"], "--calib DATA.npz"),
        (["--mode", "int16x8"], "--calib DATA.npz"),
        (["--int8-io"], "--int8-io needs `mode='int8'`"),
        (["--to", "onnx", "--mode", "int8"], "--mode int8 is for --to tflite"),
        (["--float16"], "--float16 is for --to onnx (use --mode float16)"),
        (["--to", "onnx", "--int8-io"], "--int8-io is for --to tflite"),
        (["-o", "{folder}/missing/m.tflite"], "does not exist"),
        (["--calib", "{folder}/nothing.npz", "--mode", "int8"], "not found"),
        (["--calib", "{folder}/junk.txt", "--mode", "int8"], "as .npz"),
        (["--calib", "{folder}/bad.npz", "--mode", "int8"], "no 'x'"),
        (["--calib", "{folder}/small.npz", "--mode", "int8"], "(3, 3, 3)"),
        (["--precision", "w4a8", "--mode", "int8"], "--calib DATA.npz"),
        (["--precision", "nope=w4"], "--precision names layer 'nope'"),
        (["--precision", "w5"], "Unknown layer precision 'w5'"),
        (["--precision", "a=w4,b"], "expected layer=spec pairs"),
        (["--precision", "{folder}/none.json"], "file not found"),
        (["--to", "onnx", "--precision", "w4"], "is for --to tflite"),
        (["--precision", "w4", "--algorithm", "gptq"], "--calib DATA.npz"),
        (["--activation-range", "mse"], "pass --precision"),
        (["--precision", "w4", "--activation-range", "mse"], "integer act"),
        (["--to", "onnx", "--activation-range", "mse"], "is for --to tflite"),
    ],
)
def test_convert_errors_are_one_line(files, capsys, argv, expected):
    np.savez(files / "bad.npz", images=np.zeros((2, 12, 12, 3)))
    (files / "junk.txt").write_text("not an npz file")
    np.savez(files / "small.npz", x=np.zeros((2, 3, 3, 3), "float32"))
    argv = [a.format(folder=files) for a in argv]
    status, out, err = _run(capsys, "convert", files / "model.keras", *argv)
    assert status == 1
    assert err.startswith("keras-compress convert: error: ")
    assert expected in err
    assert err.count("\n") == 1  # one line, no traceback


def test_verify_errors_are_one_line(files, capsys):
    # A file of its own: tests sharing `files` may run in any order.
    (files / "placeholder.tflite").write_bytes(b"\x00" * 32)
    status, _, err = _run(
        capsys,
        "verify",
        files / "missing.keras",
        files / "placeholder.tflite",
        "--data",
        files / "test.npz",
    )
    assert status == 1
    missing = files / "missing.keras"
    assert (
        err
        == f"keras-compress verify: error: model file not found: {missing}\n"
    )
    (files / "junk.tflite").write_bytes(b"\x00" * 32)
    status, _, err = _run(
        capsys,
        "verify",
        files / "model.keras",
        files / "junk.tflite",
        "--data",
        files / "test.npz",
    )
    assert status == 1
    assert "neither a LiteRT" in err and err.count("\n") == 1


def test_help_documents_the_data_format(capsys):
    for command in ("convert", "verify"):
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "numpy.savez" in out and "x_0, x_1" in out


def test_demo_arguments_are_unchanged():
    args = cli.build_parser().parse_args(["demo", "--quick", "-q"])
    assert args.quick and args.quiet
    assert (args.epochs, args.finetune_epochs, args.sparsity) == (3, 2, 0.8)
    assert args.handler is cli._demo


def _compress_data(files):
    x_train, y_train = toy_data(256, seed=1)
    x_val, y_val = toy_data(64, seed=3)
    path = files / "compress.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    return path


def test_compress_delivers_a_verified_file_and_a_report(
    files, capsys, tmp_path
):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps({"steps": [{"step": "prune", "sparsity": 0.5, "epochs": 1}]})
    )
    out = tmp_path / "out"
    argv = ["compress", files / "model.keras", "--data", _compress_data(files)]
    argv += ["--target", "tflite-float32", "--max-drop", "0.2"]
    argv += ["--recipe", recipe, "-o", out, "-q"]
    status, stdout, err = _run(capsys, *argv)
    assert status == 0, err
    assert str(out / "model.tflite") in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["budget_met"] is True
    final = report["stages"][-1]
    # The printed accuracy is the file's, as verify measures it again.
    assert f"accuracy {final['file_accuracy']:.4f}" in stdout
    checked = _verify_json(capsys, files, out / "model.tflite")
    assert checked["bytes"] == final["bytes"]


def test_compress_over_budget_exits_3(files, capsys, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        json.dumps(
            {"steps": [{"step": "prune", "sparsity": 0.99, "epochs": 1}]}
        )
    )
    argv = ["compress", files / "model.keras", "--data", _compress_data(files)]
    argv += ["--target", "tflite-float32", "--max-drop", "0", "--no-distill"]
    argv += ["--recipe", recipe, "-o", tmp_path / "out", "-q"]
    with pytest.warns(UserWarning, match="Budget NOT met"):
        status, _, _ = _run(capsys, *argv)
    assert status == 3
    assert (tmp_path / "out" / "model.tflite").exists()


def test_compress_takes_size_and_latency_budgets(files, capsys, tmp_path):
    out = tmp_path / "out"
    argv = ["compress", files / "model.keras", "--data", _compress_data(files)]
    argv += ["--target", "tflite-float32", "--max-drop", "0.2"]
    argv += ["--max-bytes", "1.0", "--max-latency", "1s", "-o", out, "-q"]
    status, stdout, err = _run(capsys, *argv)
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["budgets"] == {
        "max_accuracy_drop": 0.2,
        "max_bytes": 1.0,
        "max_latency": "1s",
    }
    assert set(report["budget_checks"]) == {
        "accuracy_drop",
        "bytes",
        "latency_us",
    }
    assert all(check["held"] for check in report["budget_checks"].values())
    final = report["stages"][-1]
    assert f"{final['bytes']:,} bytes" in stdout and " µs (" in stdout


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--max-bytes", "60parsecs", "--max-bytes='60parsecs': unknown unit"),
        ("--max-latency", "20", "--max-latency=20: a relative budget"),
    ],
)
def test_bad_budgets_are_one_line_naming_the_option(
    files, capsys, tmp_path, option, value, expected
):
    argv = ["compress", files / "model.keras", "--data", _compress_data(files)]
    argv += [option, value, "-o", tmp_path / "out", "-q"]
    status, _, err = _run(capsys, *argv)
    assert status == 1
    assert expected in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_compress_errors_are_one_line(files, capsys, tmp_path):
    np.savez(tmp_path / "bad.npz", inputs=np.zeros((4, 3)))
    argv = ["compress", files / "model.keras", "--data", tmp_path / "bad.npz"]
    status, _, err = _run(capsys, *argv, "-o", tmp_path / "out")
    assert status == 1
    assert "expected x_train, y_train, x_val, y_val" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "case, expected",
    [
        ("corrupt model", "is not a .keras file (a .keras file is a zip"),
        ("x and y differ", "x has 160 samples but y has 100 labels"),
        ("labels out of range", "y_val has labels from 0 to 9, but labels"),
        ("folder holds a run", "already holds the results"),
    ],
)
def test_compress_user_mistakes_are_one_line(
    files, capsys, tmp_path, case, expected
):
    model = files / "model.keras"
    x = np.zeros((160, 12, 12, 3), "float32")
    x[:, 0, 0, 0] = np.arange(160)  # not constant
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.arange(160) % 2)
    output = tmp_path / "out"
    if case == "corrupt model":
        model = tmp_path / "model.keras"
        model.write_bytes(b"not a zip archive")
    elif case == "x and y differ":
        np.savez(data, x=x, y=np.zeros(100, "int64"))
    elif case == "labels out of range":
        np.savez(data, x=x, y=np.arange(160) % 10)
    else:
        output.mkdir()
        (output / "model.tflite").write_bytes(b"an earlier result")
    argv = ["compress", model, "--data", data, "-o", output, "-q"]
    status, _, err = _run(capsys, *argv)
    assert status == 1
    assert err.startswith("keras-compress compress: error: ")
    assert expected in err, err
    assert err.count("\n") == 1  # one line, no traceback
    if case == "folder holds a run":
        assert "--overwrite" in err and "--resume" in err
        assert (output / "model.tflite").read_bytes() == b"an earlier result"


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--max-drop", "abc", "expected a number in [0, 1)"),
        ("--epochs", "two", "expected a whole number >= 1, got 'two'"),
    ],
)
def test_bad_numbers_say_what_is_expected(
    files, capsys, option, value, expected
):
    argv = ["compress", files / "model.keras", "--data", "d.npz", "-o", "out"]
    with pytest.raises(SystemExit) as info:
        _run(capsys, *argv, option, value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {expected}" in err
    assert "invalid" not in err  # not argparse's "invalid _function value"
