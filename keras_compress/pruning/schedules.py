"""Pruning schedules: when to update masks and to which sparsity.

A schedule maps a training step (a Python ``int``, counted by the
`UpdatePruningStep` callback) to ``(should_update, sparsity)``. Schedules are
evaluated on the host, once per batch, so they are plain Python arithmetic:
there is no tensor to trace and nothing that depends on the Keras backend.
"""

import math

import keras

_PACKAGE = "keras_compress"


def _check_sparsity(name, value):
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be a number in [0, 1); received {name}={value!r}. "
            "A sparsity of 1.0 would remove every weight."
        )


def _check_steps(begin_step, end_step, frequency, end_optional):
    if not isinstance(begin_step, int) or begin_step < 0:
        raise ValueError(
            "`begin_step` must be an integer >= 0; "
            f"received begin_step={begin_step!r}."
        )
    if not isinstance(end_step, int):
        raise ValueError(
            f"`end_step` must be an integer; received end_step={end_step!r}."
        )
    if end_optional and end_step == -1:
        pass
    elif end_step < begin_step:
        raise ValueError(
            f"`end_step` ({end_step}) must be >= `begin_step` ({begin_step})"
            + (" or -1 to prune until training ends." if end_optional else ".")
        )
    if not isinstance(frequency, int) or frequency < 1:
        raise ValueError(
            "`frequency` must be an integer >= 1 (masks are updated every "
            f"`frequency` steps); received frequency={frequency!r}."
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PruningSchedule:
    """Base class for pruning schedules.

    Subclasses implement `sparsity_at(step)` and may override
    `should_update(step)`. The default `should_update` updates masks at
    `begin_step`, every `frequency` steps after it, and at `end_step` itself,
    so the final sparsity is always reached even when
    `end_step - begin_step` is not a multiple of `frequency`.

    Args:
        begin_step: First step at which masks are updated.
        end_step: Last step at which masks are updated; `-1` means never stop.
        frequency: Number of steps between mask updates.

    Example:

    ```python
    class Linear(kc.pruning.PruningSchedule):
        def __init__(self, final, begin_step, end_step, frequency=10):
            super().__init__(begin_step, end_step, frequency)
            self.final = final

        def sparsity_at(self, step):
            return self.final * self.progress(step)

        def get_config(self):
            return {**super().get_config(), "final": self.final}
    ```
    """

    def __init__(self, begin_step=0, end_step=-1, frequency=100):
        _check_steps(begin_step, end_step, frequency, end_optional=True)
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency

    def sparsity_at(self, step):
        """Returns the target sparsity (a float in [0, 1)) at `step`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `sparsity_at(step)`."
        )

    def should_update(self, step):
        """Returns True if masks are to be recomputed at `step`."""
        if step < self.begin_step:
            return False
        if self.end_step != -1 and step > self.end_step:
            return False
        return (
            step - self.begin_step
        ) % self.frequency == 0 or step == self.end_step

    def progress(self, step):
        """Fraction of the way from `begin_step` to `end_step`, in [0, 1]."""
        if self.end_step in (-1, self.begin_step):
            return 1.0 if step >= self.begin_step else 0.0
        fraction = (step - self.begin_step) / (self.end_step - self.begin_step)
        return min(1.0, max(0.0, fraction))

    def __call__(self, step):
        """Returns `(should_update, sparsity)` for `step` (tfmot's contract).

        Args:
            step: The training step, a Python int.

        Returns:
            A tuple `(bool, float)`.
        """
        return self.should_update(step), self.sparsity_at(step)

    def get_config(self):
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConstantSparsity(PruningSchedule):
    """Prunes to a fixed sparsity from `begin_step` on.

    Args:
        target_sparsity: Fraction of weights to zero, in [0, 1).
        begin_step: First step at which masks are updated.
        end_step: Last step at which masks are updated; `-1` (default) keeps
            updating every `frequency` steps until training ends.
        frequency: Number of steps between mask updates.

    Example:

    ```python
    schedule = kc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=50)
    schedule(100)  # (True, 0.5)
    ```
    """

    def __init__(
        self, target_sparsity, begin_step=0, end_step=-1, frequency=100
    ):
        _check_sparsity("target_sparsity", target_sparsity)
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = float(target_sparsity)

    def sparsity_at(self, step):
        return self.target_sparsity if step >= self.begin_step else 0.0

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `final_sparsity`.

    The sparsity at step `t` is
    `final + (initial - final) * (1 - p) ** power` with
    `p = (t - begin_step) / (end_step - begin_step)` clipped to [0, 1]: it
    rises fast at first, while the network can still recover, and flattens
    towards the end (Zhu & Gupta, 2017).

    Args:
        initial_sparsity: Sparsity at `begin_step`, in [0, 1).
        final_sparsity: Sparsity at and after `end_step`, in [0, 1).
        begin_step: First step at which masks are updated.
        end_step: Step at which `final_sparsity` is reached; masks are not
            updated after it.
        power: Exponent of the polynomial; 1 is linear.
        frequency: Number of steps between mask updates.

    Example:

    ```python
    schedule = kc.pruning.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=0.8,
        begin_step=0, end_step=1000, frequency=50)
    ```
    """

    def __init__(
        self,
        initial_sparsity,
        final_sparsity,
        begin_step,
        end_step,
        power=3,
        frequency=100,
    ):
        _check_sparsity("initial_sparsity", initial_sparsity)
        _check_sparsity("final_sparsity", final_sparsity)
        _check_steps(begin_step, end_step, frequency, end_optional=False)
        if final_sparsity < initial_sparsity:
            raise ValueError(
                f"`final_sparsity`={final_sparsity} is below "
                f"`initial_sparsity`={initial_sparsity}: pruning only adds "
                "zeros (a pruned weight stays pruned), so sparsity cannot go "
                "down. Swap the two values."
            )
        if not isinstance(power, (int, float)) or power <= 0:
            raise ValueError(
                f"`power` must be a positive number; received power={power!r}."
            )
        super().__init__(begin_step, end_step, frequency)
        self.initial_sparsity = float(initial_sparsity)
        self.final_sparsity = float(final_sparsity)
        self.power = power

    def sparsity_at(self, step):
        if step < self.begin_step:
            return 0.0
        remaining = (1.0 - self.progress(step)) ** self.power
        return (
            self.final_sparsity
            + (self.initial_sparsity - self.final_sparsity) * remaining
        )

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "power": self.power,
            **super().get_config(),
        }


def number_to_prune(sparsity, size):
    """Number of weights to zero for `sparsity` out of `size`.

    Rounds down, so the achieved sparsity never exceeds the target and is
    within `1 / size` of it.

    Args:
        sparsity: Target sparsity in [0, 1).
        size: Number of weights (or blocks, or groups).

    Returns:
        An int in [0, size - 1].
    """
    return min(size - 1, int(math.floor(sparsity * size + 1e-9)))
