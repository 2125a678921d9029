"""compress()'s output folder: checked before work, resumed only if same."""

import json
import os
import stat

import keras
import numpy as np
import pytest

from keras_compress import pipeline
from keras_compress.convert import _files
from keras_compress.pipeline import run_folder

# No training: the original model, converted and verified (seconds).
CHEAP = dict(recipe=[], target="tflite-float32", latency_runs=0, verbose=0)


def _never_trains(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(keras.Model, "fit", fail)


def test_a_folder_with_results_is_refused_before_any_work(
    task, tmp_path, monkeypatch
):
    model, train, val = task
    pipeline.compress(model, train, val, output=str(tmp_path), **CHEAP)
    delivered = (tmp_path / "model.tflite").read_bytes()
    _never_trains(monkeypatch)
    with pytest.raises(
        ValueError, match="already holds the results.*overwrite"
    ):
        pipeline.compress(
            model, train, val, output=str(tmp_path), **{**CHEAP, "recipe": None}
        )
    assert (tmp_path / "model.tflite").read_bytes() == delivered


def test_overwrite_clears_the_old_stages(task, tmp_path):
    model, train, val = task
    stale = tmp_path / "stages" / "try1_1_prune.keras"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier run's stage")
    (tmp_path / "model.tflite").write_bytes(b"old")
    result = pipeline.compress(
        model, train, val, output=str(tmp_path), overwrite=True, **CHEAP
    )
    assert not stale.exists()
    assert (tmp_path / "model.tflite").read_bytes() == result.content
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert set(recorded) >= {"model", "train_data", "val_data", "recipe"}


@pytest.mark.parametrize(
    "change, part",
    [
        ("model", "model"),
        ("val_data", "val_data"),
        ("recipe", "recipe"),
        ("target", "options"),
    ],
)
def test_resume_refuses_a_different_run_and_names_the_difference(
    task, tmp_path, monkeypatch, change, part
):
    model, train, val = task
    pipeline.compress(model, train, val, output=str(tmp_path), **CHEAP)
    arguments = dict(
        model=model,
        train_data=train,
        val_data=val,
        output=str(tmp_path),
        resume=True,
        **CHEAP,
    )
    if change == "model":
        other = keras.models.clone_model(model)  # same layers, new weights
        other.compile(loss=model.loss)
        arguments["model"] = other
    elif change == "val_data":
        arguments["val_data"] = (val[0] + 1.0, val[1])
    elif change == "recipe":
        arguments["recipe"] = [pipeline.Prune(0.5, epochs=1)]
    else:
        arguments["target"] = "tflite-float16"
    _never_trains(monkeypatch)
    with pytest.raises(ValueError, match=f"differs from this call in: {part}"):
        pipeline.compress(**arguments)


def test_resume_refuses_stages_without_a_fingerprint(task, tmp_path):
    model, train, val = task
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "try1_1_prune.keras").write_bytes(b"?")
    with pytest.raises(ValueError, match="has no run.json"):
        pipeline.compress(
            model, train, val, output=str(tmp_path), resume=True, **CHEAP
        )


@pytest.mark.parametrize("kind", ["a file", "unwritable"])
def test_an_output_that_cannot_be_written_fails_first(
    task, tmp_path, monkeypatch, kind
):
    model, train, val = task
    if kind == "a file":
        output = tmp_path / "out"
        output.write_text("not a folder")
        match = "is a file"
    else:
        # Root ignores permission bits: make the write itself fail.
        output = tmp_path / "out"

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(_files.tempfile, "TemporaryFile", refuse)
        match = "cannot be written"
    _never_trains(monkeypatch)
    with pytest.raises(ValueError, match=match):
        pipeline.compress(model, train, val, output=str(output), **CHEAP)


def test_delivered_files_follow_the_umask(task, tmp_path):
    model, train, val = task
    old = os.umask(0o022)
    try:
        pipeline.compress(model, train, val, output=str(tmp_path), **CHEAP)
    finally:
        os.umask(old)
    for name in ("model.tflite", "report.json", "recipe.json", "run.json"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_fingerprint_sees_weights_data_and_options(task):
    model, train, val = task
    base = run_folder.fingerprint(model, train, val, None, {"epochs": 2})
    assert base == run_folder.fingerprint(
        model, train, val, None, {"epochs": 2}
    )
    changed = np.copy(train[0])
    changed[0, 0] += 1e-3
    assert (
        run_folder.fingerprint(
            model, (changed, train[1]), val, None, {"epochs": 2}
        )["train_data"]
        != base["train_data"]
    )
    assert (
        run_folder.fingerprint(model, train, val, None, {"epochs": 3})[
            "options"
        ]
        != base["options"]
    )
