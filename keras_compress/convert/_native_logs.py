"""Keeps the converters' native log lines off the user's terminal.

The LiteRT converter, TensorFlow's tracing and tf2onnx log
through absl and TensorFlow's C++ logging straight to file descriptor 2
(about ten lines per `to_tflite`: "fully_quantize: 0, inference_type: 6
..."), which `TF_CPP_MIN_LOG_LEVEL` does not reach, plus TensorFlow's
Python logger (retracing warnings). A library call should print nothing it
was not asked for, so the converters run inside `captured()`: the lines go
to a temporary file, and come back only on request (`show=True`) or
attached to the exception when the work fails.
"""

import contextlib
import logging
import os
import sys
import tempfile

# Lines of the captured log attached to an exception: the converter's
# error context is at the end.
_TAIL_LINES = 40
_PYTHON_LOGGERS = ("tensorflow", "absl")


@contextlib.contextmanager
def captured(show=False, replay_on_error=False):
    """Captures native log lines written to file descriptor 2.

    Python's own `sys.stderr` (warnings, progress bars) keeps the terminal;
    The Python loggers of TensorFlow and absl are held at ERROR meanwhile.

    Args:
        show: Capture nothing: let every line through (e.g. `verbose=2`).
        replay_on_error: When the block raises (other than `SystemExit` or
            `KeyboardInterrupt`), write the whole captured log to the real
            standard error before the exception propagates (the command
            line's choice, for bug reports). Otherwise the log's last lines
            are attached to the exception as a note.

    Yields:
        Nothing.
    """
    if show or not _descriptor_2_is_open():
        yield
        return
    try:
        python_stderr_is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        python_stderr_is_fd2 = False  # e.g. captured by a test runner
    if "tensorflow" in sys.modules:
        # TensorFlow makes its logger's handler on first use, bound to the
        # `sys.stderr` of that moment: not the stand-in below.
        sys.modules["tensorflow"].get_logger()
    loggers = [logging.getLogger(name) for name in _PYTHON_LOGGERS]
    saved_levels = [logger.level for logger in loggers]
    sys.stderr.flush()
    saved_fd = os.dup(2)
    saved_python_stderr = sys.stderr
    with tempfile.TemporaryFile() as log:
        if python_stderr_is_fd2:
            sys.stderr = _terminal_stream(saved_fd)
        os.dup2(log.fileno(), 2)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        except BaseException as error:
            if not isinstance(error, (SystemExit, KeyboardInterrupt)):
                log.seek(0)
                text = log.read()
                if replay_on_error:
                    os.write(saved_fd, text)
                elif text.strip():
                    lines = text.decode("utf-8", "replace").splitlines()
                    error.add_note(
                        "Native log (last lines):\n"
                        + "\n".join(lines[-_TAIL_LINES:])
                    )
            raise
        finally:
            for logger, level in zip(loggers, saved_levels):
                logger.setLevel(level)
            sys.stderr.flush()
            sys.stderr = saved_python_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


def _descriptor_2_is_open():
    # A daemon may run with descriptor 2 closed: nothing to capture then,
    # and the conversion must not fail for it.
    try:
        os.fstat(2)
    except OSError:
        return False
    return True


# One stand-in per terminal, never closed: a logging handler made during a
# capture may hold it for the rest of the process.
_TERMINAL_STREAMS = {}


def _terminal_stream(fd):
    """A text stream to what `fd` (a copy of descriptor 2) points to."""
    status = os.fstat(fd)
    key = (status.st_dev, status.st_ino)
    if key not in _TERMINAL_STREAMS:
        _TERMINAL_STREAMS[key] = open(  # noqa: SIM115 (kept open)
            os.dup(fd), "w", buffering=1, closefd=True
        )
    return _TERMINAL_STREAMS[key]
