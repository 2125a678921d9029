"""Budgets of `compress()`: accuracy, file bytes and latency.

A size or latency budget is absolute (`"60KB"`, `60_000`, `"10ms"`) or
relative to the float32 file of the target's format (`0.25`: a quarter of
its bytes or of its latency). Relative budgets are resolved once the
original model's float32 file has been measured, in the same run, on this
machine (latency: single thread, median of single-sample runs, with the
runtime the target uses: LiteRT or ONNX Runtime).
"""

import dataclasses
import numbers
import re

_BYTE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_QUANTITY = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-zµ]*)\s*$"
)


@dataclasses.dataclass(frozen=True)
class Limit:
    """One size or latency budget as given.

    Attributes:
        name: `"bytes"` or `"latency"`.
        value: Bytes, seconds, or a fraction of the float32 file's figure.
        relative: Whether `value` is a fraction of the float32 file's.
        given: The budget as the user wrote it (for messages).
    """

    name: str
    value: float
    relative: bool
    given: object

    def resolve(self, reference):
        """The absolute limit (bytes, or seconds), given the float32 file's."""
        return self.value * reference if self.relative else self.value

    def describe(self, reference):
        """E.g. `"<= 108,000 bytes (0.12x the float32 file)"`."""
        limit = self.resolve(reference)
        shown = (
            f"{limit:,.0f} bytes"
            if self.name == "bytes"
            else f"{limit * 1e6:,.1f} µs"
        )
        if self.relative:
            shown += f" ({self.value:g}x the float32 file)"
        return f"<= {shown}"


def _fraction(value, argument):
    if not 0 < value <= 1:
        raise ValueError(
            f"`{argument}`={value!r}: a relative budget is a fraction of the "
            "float32 file's figure, in (0, 1]. For an absolute budget give "
            + (
                "an integer number of bytes or a string such as '60KB'."
                if argument == "max_bytes"
                else "a string with a unit, such as '10ms' or '250us'."
            )
        )
    return float(value)


def parse_bytes(value):
    """Reads `max_bytes`: a fraction, an integer of bytes, or `"60KB"`.

    Args:
        value: `None`; a float in (0, 1] (relative to the float32 file);
            an integer >= 1 (bytes); or a string: a number with a unit of
            B, KB, KiB, MB, MiB, GB, GiB, or with `x` (relative, `"0.12x"`).

    Returns:
        A `Limit`, or `None` for `None`.

    Raises:
        ValueError: For anything else, naming `max_bytes`.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"`max_bytes` must not be a bool; received {value!r}.")
    if isinstance(value, numbers.Integral):
        if value < 1:
            raise ValueError(
                f"`max_bytes`={value!r}: a number of bytes must be >= 1."
            )
        return Limit("bytes", float(value), False, value)
    if isinstance(value, numbers.Real):
        return Limit("bytes", _fraction(value, "max_bytes"), True, value)
    if isinstance(value, str):
        number, unit = _split(value, "max_bytes", "'60KB', '1.5MiB', '0.12x'")
        if unit == "x":
            return Limit("bytes", _fraction(number, "max_bytes"), True, value)
        if unit not in _BYTE_UNITS and unit != "":
            raise ValueError(
                f"`max_bytes`={value!r}: unknown unit {unit!r}. Use one of "
                f"{', '.join(u.upper() for u in _BYTE_UNITS)} or 'x' "
                "(relative to the float32 file)."
            )
        limit = number * _BYTE_UNITS.get(unit, 1)
        if limit < 1:
            raise ValueError(f"`max_bytes`={value!r} is less than one byte.")
        return Limit("bytes", limit, False, value)
    raise ValueError(
        "`max_bytes` must be a fraction in (0, 1], an integer number of "
        f"bytes or a string such as '60KB'; received {type(value).__name__}."
    )


def parse_latency(value):
    """Reads `max_latency`: a fraction or a duration such as `"10ms"`.

    Args:
        value: `None`; a float in (0, 1] (relative to the float32 file);
            or a string: a number with a unit of s, ms, us (µs), ns, or
            with `x` (relative, `"0.25x"`).

    Returns:
        A `Limit` (absolute values in seconds), or `None` for `None`.

    Raises:
        ValueError: For anything else, naming `max_latency`.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(
            f"`max_latency` must not be a bool; received {value!r}."
        )
    if isinstance(value, numbers.Real):
        return Limit("latency", _fraction(value, "max_latency"), True, value)
    if isinstance(value, str):
        number, unit = _split(value, "max_latency", "'10ms', '250us', '0.25x'")
        if unit == "x":
            return Limit(
                "latency", _fraction(number, "max_latency"), True, value
            )
        if unit not in _TIME_UNITS:
            raise ValueError(
                f"`max_latency`={value!r}: unknown or missing unit "
                f"{unit!r}. Use one of {', '.join(_TIME_UNITS)} or 'x' "
                "(relative to the float32 file)."
            )
        seconds = number * _TIME_UNITS[unit]
        if seconds <= 0:
            raise ValueError(f"`max_latency`={value!r} must be above zero.")
        return Limit("latency", seconds, False, value)
    raise ValueError(
        "`max_latency` must be a fraction in (0, 1] or a string such as "
        f"'10ms'; received {type(value).__name__}."
    )


def from_text(text):
    """A budget typed on a command line, as `compress()` takes it.

    `"60000"` is an integer (bytes), `"0.25"` a fraction, anything else
    (`"60KB"`, `"10ms"`) stays text for `parse_bytes`/`parse_latency`.

    Args:
        text: The command-line value.

    Returns:
        An int, a float or the text.

    Example:

    ```python
    parser.add_argument("--max-latency", type=budgets.from_text)
    ```
    """
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(text, argument, examples):
    match = _QUANTITY.match(text.lower())
    if match is None:
        raise ValueError(
            f"`{argument}`={text!r} is not a number with a unit (e.g. "
            f"{examples})."
        )
    return float(match.group(1)), match.group(2)


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Every budget of one `compress()` call.

    Attributes:
        max_accuracy_drop: Largest accepted accuracy loss (0.01: a point).
        max_bytes: A `Limit` on the file's raw bytes, or `None`.
        max_latency: A `Limit` on its single-sample latency, or `None`.
    """

    max_accuracy_drop: float
    max_bytes: Limit = None
    max_latency: Limit = None

    @property
    def constrains_cost(self):
        """Whether a size or latency budget was given."""
        return self.max_bytes is not None or self.max_latency is not None

    def limits(self, original):
        """`{name: absolute limit}` given the original float32 file's stage.

        Bytes are bytes; latency is in µs, like `StageResult.latency_us`.
        """
        limits = {"accuracy_drop": self.max_accuracy_drop}
        if self.max_bytes is not None:
            limits["bytes"] = self.max_bytes.resolve(original.bytes)
        if self.max_latency is not None:
            seconds = self.max_latency.resolve(original.latency_us * 1e-6)
            limits["latency_us"] = seconds * 1e6
        return limits

    def check(self, stage, original):
        """`{name: {"value", "limit", "held"}}` for a measured stage."""
        result = {}
        for name, limit in self.limits(original).items():
            value = getattr(stage, name)
            # Accuracies are ratios of counts: allow float rounding.
            held = value <= limit + (1e-9 if name == "accuracy_drop" else 0)
            result[name] = {
                "value": float(value),
                "limit": float(limit),
                "held": bool(held),
            }
        return result

    def describe(self, original):
        """One line per budget, e.g. `"bytes <= 108,000 (0.12x ...)"`."""
        lines = [f"accuracy drop <= {self.max_accuracy_drop:.4f}"]
        if self.max_bytes is not None:
            lines.append("bytes " + self.max_bytes.describe(original.bytes))
        if self.max_latency is not None:
            lines.append(
                "latency "
                + self.max_latency.describe(original.latency_us * 1e-6)
            )
        return lines

    def as_dict(self):
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "max_bytes": None
            if self.max_bytes is None
            else self.max_bytes.given,
            "max_latency": (
                None if self.max_latency is None else self.max_latency.given
            ),
        }
