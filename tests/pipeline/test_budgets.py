"""Budgets: absolute and relative sizes and latencies, checked limits."""

import pytest

from keras_compress.pipeline import budgets
from keras_compress.pipeline import report as report_lib


@pytest.mark.parametrize(
    "given, value, relative",
    [
        (0.12, 0.12, True),
        (1.0, 1.0, True),
        ("0.12x", 0.12, True),
        (60_000, 60_000, False),
        ("60000", 60_000, False),
        ("60KB", 60_000, False),
        ("60 kB", 60_000, False),
        ("60KiB", 61_440, False),
        ("1.5MB", 1_500_000, False),
        ("2MiB", 2 * 1024**2, False),
    ],
)
def test_max_bytes_forms(given, value, relative):
    limit = budgets.parse_bytes(given)
    assert limit.value == pytest.approx(value)
    assert limit.relative is relative
    assert limit.given == given


@pytest.mark.parametrize(
    "given, value, relative",
    [
        (0.25, 0.25, True),
        ("0.25x", 0.25, True),
        ("10ms", 0.01, False),
        ("250us", 250e-6, False),
        ("250 µs", 250e-6, False),
        ("0.5s", 0.5, False),
    ],
)
def test_max_latency_forms(given, value, relative):
    limit = budgets.parse_latency(given)
    assert limit.value == pytest.approx(value)
    assert limit.relative is relative


@pytest.mark.parametrize(
    "parse, given, message",
    [
        (budgets.parse_bytes, 0, "must be >= 1"),
        (budgets.parse_bytes, 0.0, r"in \(0, 1\]"),
        (budgets.parse_bytes, 1.5, r"relative budget .* in \(0, 1\]"),
        (budgets.parse_bytes, -0.1, r"in \(0, 1\]"),
        (budgets.parse_bytes, "60 parsecs", "unknown unit 'parsecs'"),
        (budgets.parse_bytes, "lots", "not a number with a unit"),
        (budgets.parse_bytes, "1.5x", r"in \(0, 1\]"),
        (budgets.parse_bytes, True, "bool"),
        (budgets.parse_bytes, [1], "received list"),
        (budgets.parse_latency, 5, r"string with a unit, such as '10ms'"),
        (budgets.parse_latency, 0, r"in \(0, 1\]"),
        (budgets.parse_latency, "10", "missing unit"),
        (budgets.parse_latency, "10 fortnights", "unknown or missing unit"),
        (budgets.parse_latency, "0ms", "above zero"),
    ],
)
def test_bad_budgets_name_the_argument(parse, given, message):
    argument = "max_bytes" if parse is budgets.parse_bytes else "max_latency"
    with pytest.raises(ValueError, match=message) as error:
        parse(given)
    assert f"`{argument}`" in str(error.value)


def _stage(bytes_, latency_us, drop):
    return report_lib.StageResult(
        stage="s",
        attempt=1,
        target="tflite-int8",
        keras_accuracy=0.9,
        file_accuracy=0.9 - drop,
        accuracy_drop=drop,
        bytes=bytes_,
        gzip_bytes=bytes_,
        latency_us=latency_us,
        params=1,
        sparsity=0.0,
        seconds=0.0,
    )


def test_relative_limits_resolve_against_the_float32_file():
    given = budgets.Budgets(
        0.01, budgets.parse_bytes(0.25), budgets.parse_latency("80us")
    )
    original = _stage(1000, 200.0, 0.0)
    assert given.limits(original) == {
        "accuracy_drop": 0.01,
        "bytes": 250.0,
        "latency_us": pytest.approx(80.0),
    }
    checks = given.check(_stage(240, 90.0, 0.005), original)
    assert checks["bytes"]["held"] and checks["accuracy_drop"]["held"]
    assert not checks["latency_us"]["held"]
    assert checks["latency_us"]["value"] == 90.0
    assert given.describe(original) == [
        "accuracy drop <= 0.0100",
        "bytes <= 250 bytes (0.25x the float32 file)",
        "latency <= 80.0 µs",
    ]
    assert given.as_dict() == {
        "max_accuracy_drop": 0.01,
        "max_bytes": 0.25,
        "max_latency": "80us",
    }
