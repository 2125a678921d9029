"""Dtype policy names, the `"auto"` choice and the global policy.

Thin helpers over Keras's dtype policies (`keras.config.set_dtype_policy`,
`keras.DTypePolicy`): the policies a compressed model can train under, a
device-dependent `"auto"`, errors that list the valid names (Keras's own
error for a typo does not), and a scope that restores the previous policy.
"""

import contextlib

import keras

POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
VALID_POLICIES = ("auto",) + POLICIES

# float16 pays off on NVIDIA GPUs with tensor cores (Volta, compute
# capability 7.0, and newer); on older GPUs it is slower than float32.
_MIN_FLOAT16_CAPABILITY = (7, 0)


def _policy_name(policy):
    if isinstance(policy, keras.DTypePolicy):
        return policy.name
    return policy


def check_policy(policy, argument="policy"):
    """Returns the policy name, or raises a ValueError listing valid names.

    Args:
        policy: A name or a `keras.DTypePolicy`.
        argument: Argument name for the error message.

    Returns:
        The name, possibly `"auto"`.
    """
    name = _policy_name(policy)
    if name not in VALID_POLICIES:
        raise ValueError(
            f"Unknown dtype policy {argument}={policy!r}. Valid policies: "
            f"{', '.join(repr(p) for p in VALID_POLICIES)}."
        )
    return name


def detect_accelerator():
    """The kind of device Keras will compute on, and its capability.

    Returns:
        `(kind, compute_capability)`: kind is `"tpu"`, `"gpu"` or `"cpu"`;
        `compute_capability` is `(major, minor)` for an NVIDIA GPU, else
        `None`.
    """
    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("TPU"):
            return "tpu", None
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            capability = details.get("compute_capability")
            return "gpu", tuple(capability) if capability else None
        return "cpu", None
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform in ("tpu", "gpu"):
            capability = getattr(device, "compute_capability", None)
            if capability:
                capability = tuple(int(p) for p in str(capability).split("."))
            return device.platform, capability or None
        return "cpu", None
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", tuple(torch.cuda.get_device_capability())
        return "cpu", None
    return "cpu", None


def cpu_supports_bfloat16():
    """True when the CPU has native bfloat16 arithmetic.

    Looks for the AVX512-BF16 or AMX-BF16 (x86) or BF16 (Arm) feature
    flags in `/proc/cpuinfo`; False where that file does not exist.
    Without them TensorFlow emulates bfloat16: the reference CNN trained
    4 to 8 times slower under `mixed_bfloat16` than under float32 on an AMD
    EPYC with AVX2 only.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_policy(policy="auto"):
    """Returns the concrete policy name for `policy`, resolving `"auto"`.

    `"auto"` picks `"mixed_bfloat16"` on TPUs and on CPUs with native
    bfloat16 arithmetic (`cpu_supports_bfloat16`), `"mixed_float16"` on GPUs
    of compute capability 7.0 or newer (tensor cores), and `"float32"`
    elsewhere (older GPUs and CPUs without bfloat16 units), where half
    precision is emulated and slower than float32.

    Args:
        policy: `"auto"`, `"float32"`, `"mixed_float16"`,
            `"mixed_bfloat16"` or a `keras.DTypePolicy` of one of them.

    Returns:
        One of `"float32"`, `"mixed_float16"`, `"mixed_bfloat16"`.

    Example:

    ```python
    kc.mixed_precision.resolve_policy("auto")  # e.g. "mixed_float16" on a V100
    ```
    """
    name = check_policy(policy)
    if name != "auto":
        return name
    kind, capability = detect_accelerator()
    if kind == "gpu":
        if capability is not None and capability >= _MIN_FLOAT16_CAPABILITY:
            return "mixed_float16"
        return "float32"
    if kind == "cpu" and not cpu_supports_bfloat16():
        return "float32"
    return "mixed_bfloat16"


def set_global_policy(policy="auto"):
    """Sets Keras's global dtype policy (layers created afterwards use it).

    Args:
        policy: See `resolve_policy`.

    Returns:
        The policy name that was set.

    Example:

    ```python
    kc.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_model()  # computes in bfloat16, keeps float32 variables
    kc.mixed_precision.set_global_policy("float32")
    ```
    """
    name = resolve_policy(policy)
    keras.config.set_dtype_policy(name)
    return name


def global_policy():
    """The name of Keras's current global dtype policy."""
    return keras.config.dtype_policy().name


@contextlib.contextmanager
def policy_scope(policy="auto"):
    """Sets the global dtype policy inside a `with` block, then restores it.

    Args:
        policy: See `resolve_policy`.

    Yields:
        The policy name in effect inside the block.

    Example:

    ```python
    with kc.mixed_precision.policy_scope("mixed_bfloat16"):
        model = build_model()
    ```
    """
    name = resolve_policy(policy)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy(previous)
