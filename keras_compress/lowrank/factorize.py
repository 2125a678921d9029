"""Low-rank factorization of Dense and Conv2D kernels by truncated SVD.

A Dense kernel `W` of shape `(m, n)` has the singular value decomposition
`W = U diag(s) V^T`. Keeping the `r` largest singular values gives the
closest rank-`r` matrix (Eckart-Young), `W_r = A @ B` with
`A = U_r diag(sqrt(s_r))` of shape `(m, r)` and `B = diag(sqrt(s_r)) V_r^T`
of shape `(r, n)` (the square root splits the scale evenly between the two
factors, which keeps them in the same range for fine-tuning). The layer
`x @ W + b` becomes two thinner layers `(x @ A) @ B + b`: `r * (m + n)`
weights instead of `m * n`, and as many fewer multiply-adds. The relative
error of the kernel is known before anything runs:

    ||W - W_r||_F / ||W||_F = sqrt(sum of the dropped s_i^2 / sum of all s_i^2)

A Conv2D kernel `(k, k, c_in, c_out)` is factorized as the matrix
`(k * k * c_in, c_out)`: `A` becomes a k x k convolution with `r` filters
(same strides, padding and dilation, no bias, no activation) and `B` a 1 x 1
convolution with the original filters, bias and activation.

How the two layers appear in the model: as a nested `keras.Sequential` with
the original layer's name holding two stock layers, `<name>_down` (to rank
`r`) and `<name>_up`. Stock layers, not a custom "factorized" layer, so the
model loads anywhere (no `custom_objects`, not even keras_compress) and
converts with every converter; one nested block keeps the name that the rest
of the model, and `layers=[...]`, refer to. The LiteRT converter inlines it
(two FULLY_CONNECTED or CONV_2D ops).
"""

import dataclasses
import math
import numbers
import warnings

import keras
import numpy as np

from keras_compress import rewrite

# Layer classes this module can rebuild (exact classes: a subclass may
# compute something else in its call()).
SUPPORTED_LAYERS = (keras.layers.Dense, keras.layers.Conv2D)


@dataclasses.dataclass(frozen=True)
class LayerFactorization:
    """What `factorize` did with one layer.

    Attributes:
        layer: Path of the layer (nested models joined with "/").
        class_name: `"Dense"` or `"Conv2D"`.
        matrix_shape: `(m, n)`, the kernel as the matrix that is factorized
            (`(k * k * c_in, c_out)` for a Conv2D).
        full_rank: `min(m, n)`.
        rank: The rank chosen for it.
        params_before: Weights of the layer (kernel and bias).
        params_after: Weights of the two layers that replace it; equal to
            `params_before` if it was skipped.
        kept_energy: Fraction of the squared singular values kept.
        predicted_error: `||W - W_r||_F / ||W||_F`, from the dropped
            singular values.
        factorized: Whether the layer was replaced.
        reason: Why it was skipped (`None` if factorized).
    """

    layer: str
    class_name: str
    matrix_shape: tuple
    full_rank: int
    rank: int
    params_before: int
    params_after: int
    kept_energy: float
    predicted_error: float
    factorized: bool
    reason: str = None


@dataclasses.dataclass(frozen=True)
class FactorizationReport:
    """One `LayerFactorization` per candidate layer, with totals.

    Attributes:
        rows: The layers considered, in model order.
    """

    rows: tuple

    @property
    def factorized(self):
        """The rows of the layers that were replaced."""
        return tuple(row for row in self.rows if row.factorized)

    @property
    def skipped(self):
        """The rows of the layers that were left as they were."""
        return tuple(row for row in self.rows if not row.factorized)

    @property
    def params_before(self):
        return sum(row.params_before for row in self.rows)

    @property
    def params_after(self):
        return sum(row.params_after for row in self.rows)

    def as_dict(self):
        """The report as plain Python data (e.g. for JSON)."""
        return {
            "layers": [dataclasses.asdict(row) for row in self.rows],
            "params_before": self.params_before,
            "params_after": self.params_after,
        }

    def __str__(self):
        header = (
            f"{'layer':<32} {'matrix':>12} {'rank':>9} {'params':>10} "
            f"{'after':>10} {'energy':>7} {'error':>7}"
        )
        lines = [header]
        for row in self.rows:
            shape = "x".join(str(d) for d in row.matrix_shape)
            rank = f"{row.rank}/{row.full_rank}"
            lines.append(
                f"{row.layer:<32} {shape:>12} {rank:>9} "
                f"{row.params_before:>10,} {row.params_after:>10,} "
                f"{row.kept_energy:>7.4f} {row.predicted_error:>7.4f}"
                + ("" if row.factorized else f"  skipped: {row.reason}")
            )
        lines.append(
            f"{'total (these layers)':<32} {'':>12} {'':>9} "
            f"{self.params_before:>10,} {self.params_after:>10,}"
        )
        return "\n".join(lines)


def factorize(
    model,
    rank=None,
    *,
    rank_ratio=None,
    energy=None,
    layers=None,
    return_report=False,
):
    """Returns a copy of `model` with Dense/Conv2D kernels factorized by SVD.

    Each chosen layer is replaced by two thinner layers computing the best
    rank-`r` approximation of its kernel (see the module docstring): a
    Dense by `Dense(r, use_bias=False)` then `Dense(units, activation)`, a
    Conv2D by a k x k `Conv2D(r)` then a 1 x 1 `Conv2D(filters,
    activation)`, together in a nested Sequential with the layer's name.
    Give exactly one of `rank`, `rank_ratio` or `energy`:

    - `rank`: the same rank for every layer (at most its full rank).
    - `rank_ratio`: `ceil(rank_ratio * min(m, n))` for a kernel matrix of
      shape `(m, n)`.
    - `energy`: the smallest rank whose singular values keep at least this
      fraction of `sum(s_i^2)` (the squared Frobenius norm of the kernel).

    A layer is only replaced where that reduces its weights (and its
    multiply-adds, which shrink in the same proportion):
    `r * (m + n) < m * n`. Other layers are kept and listed in the report
    with the reason. Fine-tune the result for an epoch or two at a low
    learning rate to recover the accuracy a low rank costs.

    Args:
        model: A built Sequential or Functional `keras.Model` (layers of
            nested Sequential/Functional models are reached too). It is
            not changed.
        rank: A positive int, or `None`.
        rank_ratio: A float in `(0, 1]`, or `None`.
        energy: A float in `(0, 1]`, or `None`.
        layers: `None` for every Dense and Conv2D layer, or a list of
            layer names (a nested model's layer by its name or its path
            such as `"block/dense"`). A named layer must be a Dense or
            Conv2D.
        return_report: If `True`, also return a `FactorizationReport`
            (per layer: rank, parameters before and after, kept energy and
            the predicted relative kernel error).

    Returns:
        A new `keras.Model` of the same kind, or `(model, report)` with
        `return_report=True`.

    Raises:
        ValueError: For a subclassed model, for not exactly one of `rank`,
            `rank_ratio`, `energy`, for a value out of range, for an
            unknown layer name, or for a named layer that cannot be
            factorized (the message says which layers can).
        TypeError: If `layers` is not a list of names.

    Example:

    ```python
    small, report = kc.lowrank.factorize(
        model, rank_ratio=0.25, layers=["dense"], return_report=True
    )
    print(report)
    small.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    small.fit(x_train, y_train, epochs=2)
    ```
    """
    rewrite.check_is_model(model)
    if not rewrite.is_graph_model(model):
        raise ValueError(
            f"factorize() needs a Sequential or Functional model; "
            f"'{model.name}' is a subclassed {type(model).__name__}. Its "
            "call() runs its own layers, so one layer cannot be replaced by "
            "two. Build the model with the Functional API, or use "
            "keras_compress.lowrank.factorize_layer(layer, rank) in your "
            "model's code."
        )
    rewrite.check_built(model)
    choose_rank = _rank_chooser(rank, rank_ratio, energy)
    candidates, in_subclassed = _candidates(model)
    chosen = _select(model, candidates, in_subclassed, layers)
    if not chosen:
        inside = sorted(set(in_subclassed.values()))
        raise ValueError(
            f"factorize() found no Dense or Conv2D layer it can replace in "
            f"'{model.name}'"
            + (
                f": its layers with kernels are inside {inside} (subclassed "
                "models or custom layers), whose call() cannot be rewritten "
                "to use two layers. Factorize them in their classes' code "
                "with keras_compress.lowrank.factorize_layer."
                if inside
                else "."
            )
        )

    replacements = {}
    rows = []
    for path, layer in chosen:
        if id(layer) in replacements:
            continue  # a shared layer, reached twice
        matrix = _kernel_matrix(layer)
        singular_values = np.linalg.svd(matrix, compute_uv=False)
        full_rank = len(singular_values)
        layer_rank = min(choose_rank(singular_values), full_rank)
        m, n = matrix.shape
        bias = layer.bias.shape[0] if layer.use_bias else 0
        before = m * n + bias
        after = layer_rank * (m + n) + bias
        kept = _kept_energy(singular_values, layer_rank)
        reason = None
        if after >= before:
            reason = (
                f"rank {layer_rank} of {full_rank} would not reduce its "
                f"weights ({layer_rank} x ({m} + {n}) >= {m} x {n})"
            )
        rows.append(
            LayerFactorization(
                layer=path,
                class_name=type(layer).__name__,
                matrix_shape=(m, n),
                full_rank=full_rank,
                rank=layer_rank,
                params_before=before,
                params_after=before if reason else after,
                kept_energy=kept,
                predicted_error=math.sqrt(max(0.0, 1.0 - kept)),
                factorized=reason is None,
                reason=reason,
            )
        )
        if reason is None:
            replacements[id(layer)] = layer_rank
    if rows and not replacements:
        first = rows[0]
        warnings.warn(
            f"factorize() replaced no layer, so the result is an unchanged "
            f"copy: for '{first.layer}', {first.reason}"
            + (f" (and {len(rows) - 1} more layer(s) alike)" * (len(rows) > 1))
            + ". A rank pays off below m x n / (m + n) for an (m, n) kernel: "
            "choose a lower `rank`, `rank_ratio` or `energy`.",
            stacklevel=2,
        )
    new_model = rewrite.clone_and_replace(
        model,
        lambda layer: (
            factorize_layer(layer, replacements[id(layer)])
            if id(layer) in replacements
            else None
        ),
    )
    if return_report:
        return new_model, FactorizationReport(tuple(rows))
    return new_model


def factorize_layer(layer, rank):
    """Returns two layers computing `layer` with its kernel at rank `rank`.

    The building block of `factorize`, which also decides where it pays;
    this function factorizes whatever it is given, even at full rank
    (exact, but with more weights).

    Args:
        layer: A built `keras.layers.Dense` or `keras.layers.Conv2D`
            (`groups=1`).
        rank: An int from 1 to `min(m, n)` for the kernel matrix `(m, n)`.

    Returns:
        A built `keras.Sequential` named like `layer`, holding
        `<name>_down` and `<name>_up`, with the factor weights.

    Example:

    ```python
    block = kc.lowrank.factorize_layer(model.get_layer("dense"), 16)
    ```
    """
    _check_supported(layer, layer.name)
    matrix = _kernel_matrix(layer)
    full_rank = min(matrix.shape)
    if (
        isinstance(rank, bool)
        or not isinstance(rank, numbers.Integral)
        or not 1 <= rank <= full_rank
    ):
        raise ValueError(
            f"`rank` for layer '{layer.name}' must be an int from 1 to "
            f"{full_rank} (its kernel is a {matrix.shape[0]} x "
            f"{matrix.shape[1]} matrix), got {rank!r}."
        )
    rank = int(rank)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    root = np.sqrt(s[:rank])
    down_matrix = u[:, :rank] * root
    up_matrix = root[:, None] * vt[:rank]

    config = layer.get_config()
    config.pop("lora_rank", None)  # the factors are plain kernels
    config.pop("lora_alpha", None)
    name = layer.name
    down_config = dict(
        config,
        name=f"{name}_down",
        use_bias=False,
        activation="linear",
        activity_regularizer=None,
    )
    up_config = dict(config, name=f"{name}_up")
    if isinstance(layer, keras.layers.Dense):
        down = keras.layers.Dense.from_config(dict(down_config, units=rank))
        up = keras.layers.Dense.from_config(up_config)
        kernel_shapes = (down_matrix.shape, up_matrix.shape)
    else:
        down = keras.layers.Conv2D.from_config(dict(down_config, filters=rank))
        up = keras.layers.Conv2D.from_config(
            dict(
                up_config,
                kernel_size=(1, 1),
                strides=(1, 1),
                padding="valid",
                dilation_rate=(1, 1),
            )
        )
        kernel_size = tuple(layer.kernel.shape[:3])
        kernel_shapes = ((*kernel_size, rank), (1, 1, rank, layer.filters))
    input_shape = layer.get_build_config()["input_shape"]
    block = keras.Sequential(
        [keras.Input(batch_shape=tuple(input_shape)), down, up], name=name
    )
    down.kernel.assign(down_matrix.reshape(kernel_shapes[0]))
    up.kernel.assign(up_matrix.reshape(kernel_shapes[1]))
    if layer.use_bias:
        # A copy: on JAX `assign(variable)` shares the array, and a jit
        # train step of the new model donates (deletes) it.
        up.bias.assign(keras.ops.convert_to_numpy(layer.bias).copy())
    return block


def _rank_chooser(rank, rank_ratio, energy):
    """Checks the three rank arguments; returns `f(singular_values) -> r`."""
    given = {
        name: value
        for name, value in (
            ("rank", rank),
            ("rank_ratio", rank_ratio),
            ("energy", energy),
        )
        if value is not None
    }
    if len(given) != 1:
        raise ValueError(
            "Give exactly one of `rank`, `rank_ratio` or `energy`; got "
            + (", ".join(f"{k}={v!r}" for k, v in given.items()) or "none")
            + "."
        )
    if rank is not None:
        if (
            isinstance(rank, bool)
            or not isinstance(rank, numbers.Integral)
            or rank < 1
        ):
            raise ValueError(f"`rank` must be a positive int, got {rank!r}.")
        return lambda s: int(rank)
    name, value = next(iter(given.items()))
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 < value <= 1
    ):
        raise ValueError(
            f"`{name}` must be a number in (0, 1], got {value!r}"
            + (
                " (a fraction of each layer's full rank)"
                if name == "rank_ratio"
                else " (a fraction of the squared singular values to keep)"
            )
            + "."
        )
    if rank_ratio is not None:
        # A small tolerance so that 0.25 * 128 is 32, not 33.
        return lambda s: max(1, math.ceil(rank_ratio * len(s) - 1e-9))

    def by_energy(s):
        cumulative = np.cumsum(np.square(s, dtype="float64"))
        if cumulative[-1] == 0:
            return 1  # a zero kernel: rank 1 keeps all of it
        fractions = cumulative / cumulative[-1]
        return int(np.searchsorted(fractions, energy - 1e-12) + 1)

    return by_energy


def _kept_energy(singular_values, rank):
    squares = np.square(singular_values.astype("float64"))
    total = squares.sum()
    return float(squares[:rank].sum() / total) if total > 0 else 1.0


def _kernel_matrix(layer):
    """The kernel of `layer` as a float64 `(m, n)` matrix."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    return kernel.reshape(-1, kernel.shape[-1])


def _why_unsupported(layer):
    if type(layer) not in SUPPORTED_LAYERS:
        return f"it is a {type(layer).__name__}"
    if getattr(layer, "quantization_mode", None):
        return (
            f"it is quantized ({layer.quantization_mode}); factorize the "
            "float model before quantizing"
        )
    if isinstance(layer, keras.layers.Conv2D) and layer.groups != 1:
        return f"it is a grouped convolution (groups={layer.groups})"
    return None


def _check_supported(layer, path):
    reason = _why_unsupported(layer)
    if reason is not None:
        raise ValueError(
            f"Layer '{path}' cannot be factorized: {reason}. Supported: "
            "keras.layers.Dense and keras.layers.Conv2D (groups=1), not "
            "quantized; subclasses are not rebuilt either, since their "
            "call() may compute something else."
        )


def _candidates(model):
    """`(path, layer)` of the leaf layers `clone_and_replace` can swap, and
    the `{name or path: subclassed model path}` of those it cannot reach."""
    candidates, in_subclassed = [], {}

    def walk(graph, prefix):
        for layer in graph.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            path = prefix + layer.name
            if rewrite.is_graph_model(layer):
                walk(layer, path + "/")
            elif rewrite.opens_up(layer):  # a subclassed model, a block
                for inner_path, inner in rewrite.iter_layers(layer):
                    in_subclassed[inner.name] = path
                    in_subclassed[f"{path}/{inner_path}"] = path
            else:
                candidates.append((path, layer))

    walk(model, "")
    return candidates, in_subclassed


def _select(model, candidates, in_subclassed, names):
    """The candidates `names` picks (all supported ones for `None`)."""
    if names is None:
        return [
            (p, layer) for p, layer in candidates if not _why_unsupported(layer)
        ]
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(
            "`layers` must be a list of layer names, e.g. "
            f"layers=['dense']; got {names!r}."
        )
    chosen = []
    for name in names:
        found = [
            (path, layer)
            for path, layer in candidates
            if name in (path, layer.name)
        ]
        if not found:
            if name in in_subclassed:
                raise ValueError(
                    f"Layer '{name}' in `layers` is inside "
                    f"'{in_subclassed[name]}' (a subclassed model or custom "
                    "layer), whose call() cannot be rewritten to use two "
                    "layers. Factorize it in that class's code with "
                    "keras_compress.lowrank.factorize_layer."
                )
            known = [path for path, _ in candidates]
            raise ValueError(
                f"No layer named '{name}' (in `layers`) in model "
                f"'{model.name}'. Its layers are: {', '.join(known)}."
            )
        for path, layer in found:
            _check_supported(layer, path)
            chosen.append((path, layer))
    order = {id(layer): i for i, (_, layer) in enumerate(candidates)}
    return sorted(chosen, key=lambda item: order[id(item[1])])
