"""Loss scaling for float16 training (Keras's `LossScaleOptimizer`).

float16 has 5 exponent bits: gradients below about 6e-8 become zero.
`keras.optimizers.LossScaleOptimizer` multiplies the loss by a large factor
before differentiation and divides the gradients by it, lowering the factor
whenever a step overflows. bfloat16 has float32's exponent range and needs
no scaling.
"""

import keras

from keras_compress.core import keras_private
from keras_compress.mixed_precision import policy as policy_lib


def needs_loss_scaling(model_or_policy):
    """True when a model (or a policy) computes in float16.

    Args:
        model_or_policy: A `keras.layers.Layer`/`keras.Model` (true if any
            of its layers computes in float16), or a policy name.

    Returns:
        A bool.
    """
    if isinstance(model_or_policy, keras.layers.Layer):
        return any(
            layer.compute_dtype == "float16"
            for layer in keras_private.flatten_layers(
                model_or_policy, include_self=True
            )
        )
    return policy_lib.resolve_policy(model_or_policy) == "mixed_float16"


def loss_scale_optimizer(optimizer, policy=None, **kwargs):
    """Wraps `optimizer` in a `LossScaleOptimizer` when training in float16.

    Keras's `compile()` already wraps the optimizer of a model whose own
    policy is `mixed_float16`; use this where it does not: a model built
    from layers with a mixed policy under a float32 global policy, a model
    nested in a `Distiller`, or a custom training loop.

    Args:
        optimizer: An optimizer instance or name (`"adam"`).
        policy: A policy name (`"auto"` resolved), a model (its layers are
            checked), or `None` for the current global policy.
        **kwargs: Arguments of `keras.optimizers.LossScaleOptimizer`
            (`initial_scale`, `dynamic_growth_steps`).

    Returns:
        A `LossScaleOptimizer` for float16, otherwise the optimizer itself.

    Example:

    ```python
    model = kc.mixed_precision.apply_policy(model, "mixed_float16")
    optimizer = kc.mixed_precision.loss_scale_optimizer("adam", model)
    ```
    """
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    if policy is None:
        scale = keras.config.dtype_policy().compute_dtype == "float16"
    else:
        scale = needs_loss_scaling(policy)
    if scale:
        return keras.optimizers.LossScaleOptimizer(optimizer, **kwargs)
    return optimizer
