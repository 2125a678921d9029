"""Weight constraints that keep a compressed weight on its pattern.

Pruning keeps masked weights at zero, cluster-preserving QAT keeps each
cluster at one value, sparsity-preserving clustering and QAT keep zeros.
Each is a projection of the weight (`WeightConstraint.project`) that reads
state of the layer (a mask, cluster ids).

Where it runs:
- TensorFlow and PyTorch: as the variable's `constraint`, after every
  optimizer step, so the variable itself is always projected (a checkpoint
  saved at any step holds exact zeros; tfmot's issue 206).
- JAX: Keras's stateless optimizer step maps only the trainable and
  optimizer variables, so a constraint that reads a mask (a non-trainable
  variable) finds no value there. On JAX the constraint is not installed;
  the wrappers compute with `forward_value(variable)`, the projected value,
  and whoever owns the state re-projects the variables when it syncs with
  the host (the pruning callback on mask updates and at epoch and train
  end; `strip_*` always).
"""

import keras

# The variable attribute that holds its `WeightConstraint` on every
# backend (on JAX it is not the variable's `constraint`).
_ATTRIBUTE = "_keras_compress_projection"


def optimizer_runs_constraints():
    """Whether the optimizer step can run a constraint that reads state."""
    return keras.backend.backend() != "jax"


class WeightConstraint(keras.constraints.Constraint):
    """A projection of a weight that reads some state of its layer.

    Subclasses implement `project(weight)`. Installed with
    `install_constraint`, never serialized: the layer that owns the state
    re-installs it when a saved model is loaded.

    Args:
        base: The constraint the variable had before (or None), applied
            first.
    """

    def __init__(self, base=None):
        self.base = base

    def project(self, weight):
        raise NotImplementedError

    def __call__(self, weight):
        if self.base is not None:
            weight = self.base(weight)
        return self.project(weight)


class MaskConstraint(WeightConstraint):
    """Multiplies a weight by a 0/1 mask (pruning, kept sparsity).

    Args:
        mask: The 0/1 mask variable, shaped like the weight.
        base: The variable's previous constraint, applied first.
    """

    def __init__(self, mask, base=None):
        super().__init__(base)
        self.mask = mask

    def project(self, weight):
        return weight * keras.ops.cast(self.mask, weight.dtype)


def install_constraint(variable, constraint):
    """Sets `constraint` on `variable`, keeping the user's own constraint.

    A `WeightConstraint` already installed (the layer is being rebuilt, or
    another technique installed one) is replaced, not stacked; the user's
    constraint stays first. On JAX the variable keeps its user constraint
    only (see the module docstring); `projection_of` still finds
    `constraint`.

    Args:
        variable: A `keras.Variable`.
        constraint: A `WeightConstraint` whose `base` is ignored.

    Returns:
        `constraint`.
    """
    base = variable.constraint
    while isinstance(base, WeightConstraint):
        base = base.base
    constraint.base = base
    object.__setattr__(variable, _ATTRIBUTE, constraint)
    if optimizer_runs_constraints():
        variable.constraint = constraint
    return constraint


def add_mask(owner, weight):
    """A 0/1 mask of `weight` that keeps its zeros at zero while training.

    The one way pruning, sparsity-preserving clustering and QAT mask a
    weight: a non-trainable variable of `owner`, all ones, named after the
    weight, with a `MaskConstraint` on the weight.

    Args:
        owner: The layer that owns (and saves) the mask.
        weight: The `keras.Variable` to mask.

    Returns:
        The mask variable; assign it to set which entries are zero.

    Example:

    ```python
    mask = add_mask(wrapper, layer.kernel)
    mask.assign(keras.ops.cast(layer.kernel != 0, mask.dtype))
    ```
    """
    mask = owner.add_weight(
        name=f"{weight.name}_mask",
        shape=weight.shape,
        dtype=weight.dtype,
        initializer="ones",
        trainable=False,
    )
    install_constraint(weight, MaskConstraint(mask))
    return mask


def projection_of(variable):
    """The `WeightConstraint` installed on `variable`, or None."""
    return getattr(variable, _ATTRIBUTE, None)


def forward_value(variable):
    """The projected value a wrapper must compute with, or None.

    None where the optimizer keeps the variable itself projected (every
    backend but JAX) or the variable has no projection.
    """
    constraint = projection_of(variable)
    if constraint is None or optimizer_runs_constraints():
        return None
    return constraint.project(keras.ops.convert_to_tensor(variable.value))


def project_variables(variables):
    """Writes the projected value into each variable (host side)."""
    for variable in variables:
        constraint = projection_of(variable)
        if constraint is not None:
            variable.assign(constraint.project(variable.value))
