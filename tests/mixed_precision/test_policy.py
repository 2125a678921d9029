"""Policy names, "auto", the global policy and its scope."""

import keras
import pytest

from keras_compress import mixed_precision
from keras_compress.mixed_precision import policy as policy_lib


def test_names_resolve_to_themselves():
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert mixed_precision.resolve_policy(name) == name
        assert mixed_precision.resolve_policy(keras.DTypePolicy(name)) == name


def test_unknown_policy_lists_valid_names():
    for name in ("mixed_float32", "fp16", "float64", None):
        with pytest.raises(ValueError) as info:
            mixed_precision.resolve_policy(name)
        message = str(info.value)
        assert repr(name) in message
        for valid in mixed_precision.VALID_POLICIES:
            assert repr(valid) in message


def test_auto_follows_the_device(monkeypatch):
    for device, bfloat16_cpu, expected in [
        (("cpu", None), True, "mixed_bfloat16"),
        (("cpu", None), False, "float32"),
        (("tpu", None), False, "mixed_bfloat16"),
        (("gpu", (8, 0)), False, "mixed_float16"),
        (("gpu", (7, 0)), False, "mixed_float16"),
        (("gpu", (6, 1)), False, "float32"),
        (("gpu", None), False, "float32"),
    ]:
        monkeypatch.setattr(
            policy_lib, "detect_accelerator", lambda d=device: d
        )
        monkeypatch.setattr(
            policy_lib, "cpu_supports_bfloat16", lambda b=bfloat16_cpu: b
        )
        assert mixed_precision.resolve_policy("auto") == expected, device


def test_auto_on_this_machine():
    # The test machines have no GPU; bfloat16 only where the CPU has it.
    assert mixed_precision.detect_accelerator() == ("cpu", None)
    with open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert mixed_precision.cpu_supports_bfloat16() == native
    assert mixed_precision.resolve_policy() == (
        "mixed_bfloat16" if native else "float32"
    )


def test_set_global_policy_and_scope():
    assert mixed_precision.set_global_policy("mixed_bfloat16") == (
        "mixed_bfloat16"
    )
    assert keras.layers.Dense(2).compute_dtype == "bfloat16"
    with pytest.raises(RuntimeError):
        with mixed_precision.policy_scope("mixed_float16") as name:
            assert name == "mixed_float16"
            assert mixed_precision.global_policy() == "mixed_float16"
            raise RuntimeError("the previous policy is restored anyway")
    assert mixed_precision.global_policy() == "mixed_bfloat16"
    mixed_precision.set_global_policy("float32")
    assert keras.layers.Dense(2).compute_dtype == "float32"
    with pytest.raises(ValueError, match="Valid policies"):
        mixed_precision.set_global_policy("half")
