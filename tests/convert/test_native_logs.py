"""The converters keep native log lines off the terminal unless asked."""

import os

import numpy as np
import pytest

from keras_compress import convert
from keras_compress.convert import _native_logs
from tests.convert.conftest import sequential_model


def test_captured_lines_are_hidden_then_attached_to_a_failure(capfd):
    with _native_logs.captured():
        os.write(2, b"converter noise\n")
    assert "converter noise" not in capfd.readouterr().err

    with pytest.raises(ZeroDivisionError) as info:
        with _native_logs.captured():
            os.write(2, b"context for a bug report\n")
            1 / 0  # noqa: B018
    assert "context for a bug report" in "\n".join(info.value.__notes__)
    assert "context for a bug report" not in capfd.readouterr().err


def test_replay_on_error_and_show(capfd):
    with pytest.raises(ZeroDivisionError):
        with _native_logs.captured(replay_on_error=True):
            os.write(2, b"replayed\n")
            1 / 0  # noqa: B018
    assert "replayed" in capfd.readouterr().err

    with _native_logs.captured(show=True):
        os.write(2, b"asked for\n")
    assert "asked for" in capfd.readouterr().err


def test_a_closed_descriptor_2_is_left_alone(monkeypatch):
    def closed(fd):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(_native_logs.os, "fstat", closed)
    with _native_logs.captured():
        pass  # nothing to capture, and no error for it


@pytest.mark.parametrize("converter", ["tflite", "onnx"])
def test_a_conversion_prints_nothing_by_default(capfd, converter):
    model = sequential_model()
    if converter == "tflite":
        content = convert.to_tflite(model, "dynamic", verbose=0)
        convert.run_tflite(content, np.zeros((1, 12, 12, 3)))
    else:
        convert.to_onnx(model)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


@pytest.mark.parametrize("verbose, shown", [(0, False), (2, True)])
def test_verbose_2_shows_the_converter_log(capfd, monkeypatch, verbose, shown):
    from keras_compress.convert import tflite

    # TF_CPP_MIN_LOG_LEVEL=3 in the tests silences the real converter, so
    # stand in for its C++ logging: a line on descriptor 2 mid-conversion.
    configure = tflite._configure

    def logging_configure(*args, **kwargs):
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
        return configure(*args, **kwargs)

    monkeypatch.setattr(tflite, "_configure", logging_configure)
    convert.to_tflite(sequential_model(), "float32", verbose=verbose)
    assert ("fully_quantize" in capfd.readouterr().err) == shown
