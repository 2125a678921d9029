"""compress() under MultiWorkerMirroredStrategy: two local worker processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from keras_compress import convert

WORKER = os.path.join(os.path.dirname(__file__), "multiworker_worker.py")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(WORKER)))
TIMEOUT_S = 240


def _free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_workers(tmp_path):
    cluster = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env.update(
            TF_CONFIG=json.dumps(
                {
                    "cluster": {"worker": cluster},
                    "task": {"type": "worker", "index": index},
                }
            ),
            CUDA_VISIBLE_DEVICES="",
            TF_CPP_MIN_LOG_LEVEL="3",
            KERAS_BACKEND="tensorflow",
            PYTHONPATH=os.pathsep.join(
                [REPO_ROOT] + [p for p in [env.get("PYTHONPATH")] if p]
            ),
        )
        # Keras's rule for multi-worker runs: only the chief's files are
        # the real ones, the other worker writes to a folder of its own.
        output = tmp_path / ("chief" if index == 0 else f"worker{index}")
        log = open(tmp_path / f"worker{index}.log", "wb")
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    WORKER,
                    str(output),
                    str(tmp_path / f"result{index}.json"),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    return processes


def _wait(processes, tmp_path):
    try:
        codes = [p.wait(timeout=TIMEOUT_S) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for index, code in enumerate(codes):
        log = (tmp_path / f"worker{index}.log").read_text(errors="replace")
        assert code == 0, f"worker {index} exited {code}:\n{log[-4000:]}"


def test_compress_under_two_worker_processes(tmp_path):
    _wait(_start_workers(tmp_path), tmp_path)
    results = [
        json.loads((tmp_path / f"result{i}.json").read_text()) for i in (0, 1)
    ]
    chief, worker = results
    assert chief["num_replicas"] == worker["num_replicas"] == 2
    # Both start from the same model and fine-tune on different data: the
    # weights only agree if every step all-reduced the gradients.
    assert chief["train_sha256"] != worker["train_sha256"]
    assert chief["baseline_sha256"] == worker["baseline_sha256"]
    assert chief["final_sha256"] == worker["final_sha256"]
    assert chief["final_sha256"] != chief["baseline_sha256"]
    # The pruning target (50 % of the kernels) holds in the delivered model.
    assert chief["pruned_sparsity"] > 0.45
    assert chief["final_sparsity"] > 0.45
    # The file the chief delivered is the one its report measured.
    assert chief["file_accuracy"] == chief["report_file_accuracy"]
    assert chief["file_accuracy"] > chief["original_accuracy"] - 0.1
    assert chief["budget_met"]
    chief_dir = tmp_path / "chief"
    assert chief["path"] == str(chief_dir / "model.tflite")
    report = json.loads((chief_dir / "report.json").read_text())
    assert report["budget_met"] is True
    assert [s["stage"].split("(")[0] for s in report["stages"]] == [
        "original",
        "prune",
        "quantize",
    ]
    content = (chief_dir / "model.tflite").read_bytes()
    assert content[4:8] == b"TFL3"
    # The same weights convert to the same file on the other worker.
    assert (tmp_path / "worker1" / "model.tflite").read_bytes() == content
    x = np.zeros((1, 12), "float32")
    assert np.asarray(convert.run_tflite(content, x)).shape == (1, 3)
