"""Conversion of a model trained on JAX or PyTorch, through TensorFlow.

LiteRT's converter and tf2onnx read TensorFlow graphs, and Keras picks its
backend once per process. A model of another backend is therefore saved to
a `.keras` file and converted by a worker process running the TensorFlow
backend: the same `to_tflite` / `to_onnx`, on the same weights (a `.keras`
file is backend-independent). The worker is started on the first such
conversion and kept for the life of the process, so later conversions do
not pay for importing TensorFlow again.

The worker loads the file without `custom_objects`: the classes of the
model must be registered Keras serializables defined in importable modules
(not in `__main__`); the worker imports the modules of the model's layer
classes before loading.
"""

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading

import keras
import numpy as np

from keras_compress.convert import _files
from keras_compress.core import keras_private

_RESPONSE = "KERAS_COMPRESS_RESPONSE "
_worker = None
_lock = threading.Lock()


def needs_worker():
    """Whether conversions must go through the TensorFlow worker."""
    return keras.backend.backend() != "tensorflow"


def _modules_to_import(model):
    modules = set()
    for layer in keras_private.flatten_layers(model, include_self=True):
        module = type(layer).__module__
        if module.startswith(("keras.", "keras_compress.")):
            continue
        if module == "__main__":
            raise ValueError(
                f"Layer '{layer.name}' is a {type(layer).__name__} defined "
                f"in the script being run (__main__). A model trained on the "
                f"{keras.backend.backend()} backend is converted by a "
                "TensorFlow-backend worker process that must import its "
                "classes: move the class into a module of its own and "
                "register it with @keras.saving.register_keras_serializable."
            )
        modules.add(module)
    return sorted(modules)


def _array_data(data, argument):
    """`data` as a list of arrays (one per input), or a clear error."""
    if data is None:
        return None
    if isinstance(data, tuple) and data and not isinstance(data[0], dict):
        data = data[0]  # (x,) or (x, y)
    arrays = data if isinstance(data, list) else [data]
    try:
        return [np.asarray(keras.ops.convert_to_numpy(a)) for a in arrays]
    except Exception as error:
        raise ValueError(
            f"`{argument}` must be NumPy arrays (or a tuple (x, y)) when the "
            f"model runs on the {keras.backend.backend()} backend: it is "
            "handed to a TensorFlow worker process. Got "
            f"{type(data).__name__}."
        ) from error


def convert(function, model, path=None, data_argument=None, **kwargs):
    """Runs `keras_compress.convert.<function>(model, **kwargs)` in the
    TensorFlow worker and returns the bytes it wrote.

    Args:
        function: `"to_tflite"` or `"to_onnx"`.
        model: A built model of the current (non-TensorFlow) backend.
        path: Where to write the file as well (atomically), or None.
        data_argument: The name of a keyword argument holding input arrays
            (e.g. `"representative_data"`), sent as a `.npz` file.
        **kwargs: JSON-serializable arguments of `function`, plus the data.

    Returns:
        The converted file's bytes.
    """
    modules = _modules_to_import(model)
    data = kwargs.pop(data_argument, None) if data_argument else None
    data = _array_data(data, data_argument)
    with tempfile.TemporaryDirectory(prefix="keras_compress_") as tmp:
        model_path = os.path.join(tmp, "model.keras")
        model.save(model_path)
        data_path = None
        if data is not None:
            data_path = os.path.join(tmp, "data.npz")
            np.savez(data_path, *data)
        output_path = os.path.join(tmp, "output")
        request = {
            "function": function,
            "model_path": model_path,
            "modules": modules,
            "kwargs": kwargs,
            "data_argument": data_argument,
            "data_path": data_path,
            "output_path": output_path,
        }
        response = _get_worker().request(request)
        if not response["ok"]:
            error_type = {
                "ValueError": ValueError,
                "TypeError": TypeError,
                "ImportError": ImportError,
            }.get(response["type"], RuntimeError)
            raise error_type(
                f"{response['message']} (raised by the TensorFlow-backend "
                f"worker that converts {keras.backend.backend()} models)"
            )
        with open(output_path, "rb") as file:
            content = file.read()
    if path is not None:
        _files.write_atomically(path, content)
    return content


class _Worker:
    def __init__(self):
        env = dict(os.environ)
        env["KERAS_BACKEND"] = "tensorflow"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def alive(self):
        return self.process.poll() is None

    def request(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(_RESPONSE):
                return json.loads(line[len(_RESPONSE) :])
        raise RuntimeError(
            "The TensorFlow-backend conversion worker exited without an "
            f"answer (exit code {self.process.wait()})."
        )

    def close(self):
        if self.alive():
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _get_worker():
    global _worker
    with _lock:
        if _worker is None or not _worker.alive():
            _worker = _Worker()
            atexit.register(_worker.close)
        return _worker


def _serve():
    """The worker's loop: one JSON request per line on standard input."""
    import importlib
    import traceback

    import keras_compress.convert as convert_lib

    for line in sys.stdin:
        request = json.loads(line)
        try:
            for module in request["modules"]:
                importlib.import_module(module)
            model = keras.saving.load_model(request["model_path"])
            kwargs = dict(request["kwargs"])
            if request["data_path"]:
                with np.load(request["data_path"]) as stored:
                    arrays = [stored[f"arr_{i}"] for i in range(len(stored))]
                kwargs[request["data_argument"]] = (
                    arrays[0] if len(arrays) == 1 else arrays
                )
            function = getattr(convert_lib, request["function"])
            function(model, path=request["output_path"], **kwargs)
            response = {"ok": True}
        except Exception as error:
            response = {
                "ok": False,
                "type": type(error).__name__,
                "message": str(error) or traceback.format_exc(limit=3),
            }
        sys.stdout.write(_RESPONSE + json.dumps(response) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
