"""File helpers shared by the converters: paths, atomic writes, formats."""

import os
import secrets
import tempfile

TFLITE = "tflite"
ONNX = "onnx"

# Every LiteRT/TFLite flatbuffer carries this file identifier at bytes 4:8.
_TFLITE_IDENTIFIER = b"TFL3"
# An ONNX file is a serialized `ModelProto`. Every writer (onnx, tf2onnx,
# torch) puts field 1, `ir_version` (a varint), first: tag byte 0x08.
_ONNX_FIRST_BYTE = 0x08


def check_output_path(path, example_name):
    """Returns `path` as a string after checking that it can be written.

    Runs before any conversion work, so that a typo in a folder name fails
    at once and not after a minute of calibration.

    Args:
        path: The file path the caller will write (str or path-like).
        example_name: A file name for the error message, e.g.
            `"model.tflite"`.

    Returns:
        `os.fspath(path)`.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(
            f"`path`={path!r} is a folder; give a file path such as "
            f"{os.path.join(path, example_name)!r}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(
            f"The folder of `path`={path!r} does not exist: {folder!r}. "
            "Create it first."
        )
    try:
        probe_writable(folder)
    except OSError as error:
        raise ValueError(
            f"`path`={path!r} cannot be written: its folder {folder!r} "
            f"refuses new files ({error.strerror or error}). Choose another "
            "path."
        ) from error
    return path


def probe_writable(folder):
    """Creates and removes a file in `folder`; raises `OSError` if it can't.

    Permission bits do not say it (root ignores them; a read-only mount
    or a full disk does not show in them): writing something does.
    """
    with tempfile.TemporaryFile(dir=folder):
        pass


def write_atomically(path, content):
    """Writes `content` to `path` through a temporary file and a rename.

    A reader sees the old file or the whole new one, never a part; an
    error (a full disk, an interrupt) leaves no partial file behind. The
    file gets the permissions of any new file (the user's umask).
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(
        folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp"
    )
    try:
        # Not `tempfile.mkstemp`: its files are private (0600) whatever
        # the umask; 0666 here is masked by the umask like any new file.
        handle = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(handle, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def read_model_bytes(model_content, argument="model_content"):
    """The bytes of a converted file given as bytes or as a file path."""
    if isinstance(model_content, (bytes, bytearray, memoryview)):
        return bytes(model_content)
    if isinstance(model_content, (str, os.PathLike)):
        with open(model_content, "rb") as file:
            return file.read()
    raise TypeError(
        f"`{argument}` must be the bytes of a converted file or a path to "
        f"a .tflite or .onnx file; got {type(model_content).__name__}."
    )


def detect_format(content):
    """`"tflite"` or `"onnx"`, from the content of a converted file.

    Args:
        content: The file's bytes.

    Returns:
        `"tflite"` for a LiteRT flatbuffer, `"onnx"` for an ONNX model.

    Raises:
        ValueError: If the bytes are neither.
    """
    if content[4:8] == _TFLITE_IDENTIFIER:
        return TFLITE
    if content[:1] == bytes([_ONNX_FIRST_BYTE]) and _parses_as_onnx(content):
        return ONNX
    head = content[:8]
    raise ValueError(
        f"The file ({len(content):,} bytes, starting {head!r}) is neither a "
        "LiteRT/TFLite flatbuffer (b'TFL3' at bytes 4:8) nor an ONNX model. "
        "Pass the output of `to_tflite` or `to_onnx`."
    )


def _parses_as_onnx(content):
    try:
        import onnx
    except ImportError:
        # Without the onnx package trust the first byte; onnxruntime will
        # report a damaged file when it loads it.
        return True
    try:
        model = onnx.load_from_string(content)
    except Exception:  # DecodeError and friends: not a ModelProto.
        return False
    return len(model.graph.node) > 0
