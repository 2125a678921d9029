"""The budget search of `compress()`: channels and precision per layer.

When a size or latency budget is given, `compress()` chooses, per layer,
the fraction of output channels to remove and the weight bits, so that the
file fits the budgets at the smallest predicted accuracy loss.

Why these two knobs: on LiteRT's CPU interpreter only fewer channels
make a file faster (an 80 %-sparse file is exactly as slow as the dense
one; int8 kernels were no faster than float32 on this project's CPU), and
fewer channels and fewer bits both make it smaller. Unstructured sparsity
shrinks raw bytes only in LiteRT's sparse format, which does not combine
with ai-edge-quantizer's 4-bit weights, and weight clustering only helps a
compressor such as gzip. Both stay with the accuracy-only search
(`compress()` without `max_bytes`/`max_latency`), which minimizes gzip
bytes; adding sparsity (sparse format, int8 layers only) as a third knob
is left for later.

How it chooses (greedy, after NetAdapt, Yang et al. 2018):

1. Two sensitivity scans without training: each channel group alone loses
   25/50/75 % of its channels (`analysis.channel_sensitivity`), each layer
   alone gets 4-bit weights (`analysis.precision_sensitivity`). Their
   accuracy drops are the predicted cost of each choice.
2. A cost model per layer, from the model's parameters and FLOPs
   (`analysis.profile`): removing a fraction of a group's channels shrinks
   its producers, followers and consumers by that fraction; 4-bit weights
   halve a layer's int8 bytes. Bytes are predicted as a share of the
   measured int8 (or float) file, latency as a share of its FLOPs. With a
   latency budget and the bits knob, each layer's latency is also
   measured in an 8-bit and a 4-bit file (`convert.op_latencies`: its
   operators timed alone), and each 4-bit layer slower than at 8 bits
   adds the difference to the prediction: LiteRT's int4 kernels can be
   several times slower than its int8 ones (measured: 1x1 convolutions
   5-8x on this project's CPU), so a 4-bit layer buys bytes with time,
   and the search knows how much before it builds a file. A 4-bit layer
   measured faster alone is not credited: the plan's file then comes from
   ai-edge-quantizer, whose other operators the table does not price.
3. From the uncompressed plan, each step takes the move (one group one
   ratio further, or one layer to 4 bits) with the best ratio of budget
   progress to predicted accuracy drop. When the prediction fits the
   budgets, the candidate file is built (untrained: the shapes and the
   precision decide size and speed) and measured; if it does not fit, the
   prediction is corrected by the measurement and the greedy goes on.
   The first fitting plan is then relaxed: single moves are undone, the
   most accurate first, while the measured file still fits.
4. The greedy runs three times: both knobs, channels alone, bits alone.
   The plans that fit are tried in order of predicted drop, each
   fine-tuned with distillation and verified; the first within the
   accuracy budget is delivered.

A greedy allocation is used rather than a Lagrangian one because the
costs are measured, not additive: a file's latency is not the sum of its
layers' (fusions, kernel choices), so every plan the search commits to is
a measured file, and a greedy path needs few of them.
"""

import dataclasses
import time

import numpy as np

from keras_compress import analysis
from keras_compress import convert
from keras_compress import rewrite
from keras_compress.pipeline import recipe as recipe_lib
from keras_compress.pipeline import steps as steps_lib
from keras_compress.pipeline import targets as targets_lib

CHANNEL_RATIOS = (0.25, 0.5, 0.75)
LOW_BITS = 4
# Fine-tuning of a model with channels removed: Adam from this rate,
# cosine-decayed to 0 (see `PruneChannels`).
CHANNELS_LEARNING_RATE = 2e-3
# Most plans a search fine-tunes (each is a full fine-tune and verify).
MAX_TRIES = 3
# Most untrained candidate files one search builds and measures.
MAX_MEASUREMENTS = 16
# The search aims under the budget by this factor: latency varies by
# about 10 % between runs of the same file, and a QAT file is a few
# hundred bytes larger than the PTQ file measured for it.
MARGINS = {"bytes": 0.98, "latency_us": 0.9}
# Low-bit precision of each target that has one, and the 8-bit precision
# of the same kind (the per-layer latency table compares the two).
LOW_BIT_PRECISION = {"tflite-int8": "w4a8", "tflite-dynamic": "w4-dynamic"}
BASE_PRECISION = {"tflite-int8": "w8a8", "tflite-dynamic": "w8-dynamic"}
# Weight bits of a layer with a kernel, per target (others stay float32).
_BASE_BITS = {
    "tflite-float32": 32,
    "tflite-float16": 16,
    "tflite-dynamic": 8,
    "tflite-int8": 8,
    "tflite-integer-only": 8,
    "onnx": 32,
    "onnx-float16": 16,
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-layer choices of the budget search.

    Attributes:
        channels: `((layer name, fraction of channels removed), ...)`,
            sorted; layers are each group's first producer.
        low_bits: Sorted layer names whose weights get `LOW_BITS` bits.
    """

    channels: tuple = ()
    low_bits: tuple = ()

    def with_channels(self, layer, ratio):
        channels = dict(self.channels)
        channels[layer] = ratio
        return Plan(tuple(sorted(channels.items())), self.low_bits)

    def with_low_bits(self, layer):
        return Plan(self.channels, tuple(sorted({*self.low_bits, layer})))

    def describe(self):
        parts = [
            f"{name} -{ratio:.0%} channels" for name, ratio in self.channels
        ]
        parts += [f"{name} {LOW_BITS}-bit" for name in self.low_bits]
        return ", ".join(parts) or "no channel or bit removed"

    def precision(self, target):
        """`{layer: low-bit spec}` for a `ptq` step, or `None`."""
        if not self.low_bits:
            return None
        # Channel pruning inlines nested models: paths become names.
        names = (
            [path.rsplit("/", 1)[-1] for path in self.low_bits]
            if self.channels
            else self.low_bits
        )
        return dict.fromkeys(names, LOW_BIT_PRECISION[target])

    def recipe(self, target, epochs):
        """The `Recipe` that trains and converts this plan for `target`."""
        steps = []
        if self.channels:
            steps.append(
                steps_lib.PruneChannels(
                    dict(self.channels),
                    epochs=epochs,
                    learning_rate=CHANNELS_LEARNING_RATE,
                    schedule="cosine",
                )
            )
        if self.low_bits:
            # GPTQ: the rounding error of each column is compensated in
            # the next ones, which keeps 4-bit weights close to float.
            steps.append(
                steps_lib.QuantizePostTraining(
                    self.precision(target), algorithm="gptq"
                )
            )
        elif targets_lib.is_integer_target(target):
            steps.append(steps_lib.QuantizeAware(epochs=epochs))
        return recipe_lib.Recipe(steps)

    def as_dict(self):
        return {
            "channels": dict(self.channels),
            "low_bits": list(self.low_bits),
        }

    @classmethod
    def from_dict(cls, data):
        """Reads back what `as_dict()` gave."""
        return cls(
            tuple(sorted(data["channels"].items())),
            tuple(sorted(data["low_bits"])),
        )


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What the budget search decided.

    Attributes:
        plans: The plans to fine-tune, in order (the most promising
            first). When none fits, the one closest to the budgets.
        fits: Whether the plans' untrained files fit the size and latency
            budgets.
        candidates: One dict per measured untrained file: its plan, its
            predicted drop, bytes and latency.
        notes: Knobs left out and why.
        seconds: `{"scans": s, "search": s}`.
        channel_scan: The channel `SensitivityReport`, or `None`.
        bits_scan: The precision `SensitivityReport`, or `None`.
        layer_latency: The `LayerLatencyTable` the latency predictions
            used, or `None` (no latency budget, or no bits knob).
    """

    plans: tuple
    fits: bool
    candidates: tuple
    notes: tuple
    seconds: dict
    channel_scan: object = None
    bits_scan: object = None
    layer_latency: object = None

    def as_dict(self):
        result = {
            "plans": [p.as_dict() for p in self.plans],
            "fits": self.fits,
            "candidates": list(self.candidates),
            "notes": list(self.notes),
            "seconds": dict(self.seconds),
        }
        if self.layer_latency is not None:
            result["layer_latency_us"] = self.layer_latency.as_dict()
        return result


@dataclasses.dataclass(frozen=True)
class LayerLatencyTable:
    """Each layer's latency at the base and the low-bit precision.

    Attributes:
        base: `{layer path: µs}` of its operators in the 8-bit file.
        low: `{layer path: µs}` in the file with every layer at 4 bits.
        other: µs of the 8-bit file's operators no layer owns (the
            input's quantization, pooling, reshapes, an Add).
    """

    base: dict
    low: dict
    other: float

    def as_dict(self):
        return {
            "base": dict(self.base),
            "low": dict(self.low),
            "other": self.other,
        }


class _CostModel:
    """Predicted weight bytes and FLOPs of a plan, from the model's weights.

    A matrix (a kernel) of a layer shrinks with the channels it writes and
    those it reads; a vector (bias, BatchNorm) with those it writes only.
    Kernels take the target's weight bits (4 where the plan says); vectors
    take 32 (an int8 file stores biases as int32).
    """

    def __init__(self, model, target, graph, layer_latency=None):
        self.base_bits = _BASE_BITS[target]
        self.layer_latency = layer_latency
        flops = {row.name: row.flops for row in analysis.profile(model).layers}
        # (path, name, [(size, is a matrix)], flops)
        self.layers = [
            (
                path,
                layer.name,
                [
                    (int(np.prod(w.shape)), len(w.shape) >= 2)
                    for w in layer.weights
                ],
                flops.get(path, 0),
            )
            for path, layer in rewrite.iter_layers(model)
        ]
        # name -> group index of the channels it writes / reads.
        self.writes, self.reads, self.group_of = {}, {}, {}
        if graph is not None:
            for group in graph.groups:
                if not group.prunable:
                    continue
                self.group_of[group.producers[0]] = group.index
                for name in (*group.producers, *group.followers):
                    self.writes[name] = group.index
                for name in group.consumers:
                    self.reads.setdefault(name, []).append(group.index)

    def estimate(self, plan):
        """`(weight bytes, FLOPs, latency units)` of `plan`'s model, before
        calibration.

        Latency units are FLOPs: fewer channels save time in proportion to
        the FLOPs they remove (what the search was validated on). With a
        layer latency table, each 4-bit layer slower alone than at 8 bits
        adds the difference (scaled by its channels), converted to FLOPs
        at the table's µs per FLOP: LiteRT's int4 kernels are several
        times slower than its int8 ones for most convolutions, and FLOPs
        cannot tell.
        """
        kept = {
            self.group_of[name]: 1.0 - ratio for name, ratio in plan.channels
        }
        table = self.layer_latency
        total_bytes = total_flops = 0.0
        bits_delta = 0.0  # µs that 4-bit layers add (or save)
        for path, name, weights, flops in self.layers:
            out_scale = kept.get(self.writes.get(name), 1.0)
            reads = self.reads.get(name)
            in_scale = (
                sum(kept.get(g, 1.0) for g in reads) / len(reads)
                if reads
                else 1.0
            )
            low = any(
                path == key or path.startswith(key + "/") or name == key
                for key in plan.low_bits
            )
            for size, is_matrix in weights:
                if is_matrix:
                    bits = LOW_BITS if low else self.base_bits
                    total_bytes += size * out_scale * in_scale * bits / 8
                else:
                    total_bytes += size * out_scale * 4
            total_flops += flops * out_scale * in_scale
            if table is not None and low and path in table.low:
                # Only ever a cost: a plan with 4-bit layers is written by
                # ai-edge-quantizer, whose file the table does not price
                # beyond its layers, so a layer faster alone is no promise
                # of a faster file.
                delta = max(table.low[path] - table.base.get(path, 0.0), 0.0)
                bits_delta += delta * out_scale * in_scale
        total_time = total_flops
        if bits_delta:
            total_time += bits_delta * self._flops_per_us()
        return total_bytes, total_flops, total_time

    def _flops_per_us(self):
        """The model's FLOPs per µs of its 8-bit file in the table."""
        table = self.layer_latency
        micros = table.other + sum(table.base.values())
        flops = sum(row[3] for row in self.layers)
        return flops / max(micros, 1e-9)


def search(
    model,
    target,
    limits,
    measure_plan,
    x_val,
    y_val,
    channel_scan_fn,
    bits_scan_fn,
    log,
    layer_latency_fn=None,
):
    """Chooses per-layer channels and bits for the size/latency `limits`.

    Args:
        model: The original model.
        target: The `compress()` target.
        limits: `{"bytes": b, "latency_us": t}` (either may be missing).
        measure_plan: `plan -> {"bytes", "latency_us"}` of the plan's
            untrained file.
        x_val: Validation inputs (for the scans).
        y_val: Validation labels.
        channel_scan_fn: `() -> SensitivityReport` (channels; may reuse a
            cached scan).
        bits_scan_fn: `() -> SensitivityReport` (bits), or `None` when the
            target has no low-bit precision.
        log: Callable for progress lines.
        layer_latency_fn: `() -> LayerLatencyTable` (see
            `measure_layer_latency`), called when there is a latency budget
            and a bits knob; `None` predicts latency from FLOPs alone.

    Returns:
        A `SearchResult`.
    """
    start = time.perf_counter()
    notes = []
    graph = None
    channel_scan = bits_scan = None
    try:
        graph = _channel_graph(model)
    except ValueError as error:
        notes.append(f"channels left out: {error}".split("\n")[0])
    if graph is not None:
        if any(group.prunable for group in graph.groups):
            channel_scan = channel_scan_fn()
        else:
            notes.append(
                "channels left out: no Dense/convolution output of the model "
                "can lose channels (each is a model output or read by a "
                "layer channel pruning cannot follow)"
            )
            graph = None
    if target in LOW_BIT_PRECISION:
        bits_scan = bits_scan_fn()
    else:
        notes.append(
            f"bits left out: target {target!r} has no low-bit precision "
            f"(int4 weights need {' or '.join(LOW_BIT_PRECISION)})"
        )
    layer_latency = None
    if (
        bits_scan is not None
        and "latency_us" in limits
        and layer_latency_fn is not None
    ):
        layer_latency = layer_latency_fn()
    scan_seconds = time.perf_counter() - start
    floor = 1.0 / max(len(y_val), 1)  # one sample: the drops' resolution
    costs = _CostModel(model, target, graph, layer_latency)
    greedy = _Greedy(
        costs, limits, measure_plan, channel_scan, bits_scan, floor, log
    )
    knob_sets = []
    if channel_scan is not None and bits_scan is not None:
        knob_sets.append(("channels", "bits"))
    if channel_scan is not None:
        knob_sets.append(("channels",))
    if bits_scan is not None:
        knob_sets.append(("bits",))
    if not knob_sets:
        knob_sets.append(())
    fitting = []
    for knobs in knob_sets:
        plan, fits = greedy.run(knobs)
        if fits:
            plan = greedy.relax(plan)
            if plan not in fitting:
                fitting.append(plan)
    if not fitting:
        # Within the budgets but not their margins: still worth a try.
        fitting = [
            plan
            for plan, figures in greedy.measured.items()
            if greedy.fits(figures, margins=False)
        ]
    if not fitting:
        closest = min(
            greedy.measured,
            key=lambda plan: (
                greedy.excess(greedy.measured[plan]),
                greedy.predicted_drop(plan),
            ),
        )
    fitting.sort(key=greedy.predicted_drop)
    plans = tuple(fitting[:MAX_TRIES]) if fitting else (closest,)
    return SearchResult(
        plans=plans,
        fits=bool(fitting),
        candidates=tuple(greedy.candidates),
        notes=tuple(notes),
        seconds={
            "scans": scan_seconds,
            "search": time.perf_counter() - start - scan_seconds,
        },
        channel_scan=channel_scan,
        bits_scan=bits_scan,
        layer_latency=layer_latency,
    )


def _channel_graph(model):
    """The model's channel groups; `ValueError` where it cannot be rebuilt."""
    from keras_compress import pruning

    return pruning.channel_plan(model, 0.0).graph


class _Greedy:
    def __init__(
        self, costs, limits, measure_plan, channel_scan, bits_scan, floor, log
    ):
        self.costs = costs
        self.budget_limits = {k: v for k, v in limits.items() if k in MARGINS}
        self.limits = {k: v * MARGINS[k] for k, v in self.budget_limits.items()}
        self.measure_plan = measure_plan
        self.channel_scan = channel_scan
        self.bits_scan = bits_scan
        self.floor = floor
        self.log = log
        self.measured = {}
        self.candidates = []
        base = self.measure(Plan())
        self.base = base
        self.base_estimate = costs.estimate(Plan())

    def measure(self, plan):
        if plan not in self.measured:
            figures = self.measure_plan(plan)
            self.measured[plan] = figures
            self.candidates.append(
                {
                    "plan": plan.as_dict(),
                    "predicted_drop": self.predicted_drop(plan),
                    **figures,
                }
            )
            self.log(
                f"  candidate {plan.describe()}: {figures['bytes']:,} bytes, "
                f"{figures['latency_us']:.1f} µs (untrained file)"
            )
        return self.measured[plan]

    def predicted_drop(self, plan):
        drop = 0.0
        for name, ratio in plan.channels:
            drop += max(self.channel_scan.drop(name, ratio), 0.0)
        for name in plan.low_bits:
            drop += max(self.bits_scan.drop(name, LOW_BITS), 0.0)
        return drop

    def estimate(self, plan, correction):
        weight_bytes, _, latency = self.costs.estimate(plan)
        base_bytes, _, base_latency = self.base_estimate
        figures = {
            "bytes": self.base["bytes"] * weight_bytes / max(base_bytes, 1.0),
            "latency_us": self.base["latency_us"]
            * latency
            / max(base_latency, 1e-9),
        }
        return {k: v * correction[k] for k, v in figures.items()}

    def fits(self, figures, margins=True):
        limits = self.limits if margins else self.budget_limits
        return all(figures[k] <= limit for k, limit in limits.items())

    def excess(self, figures):
        """How far over the budgets, summed as fractions of each."""
        return sum(
            max(0.0, figures[k] / limit - 1.0)
            for k, limit in self.budget_limits.items()
        )

    def moves(self, plan, knobs):
        if "channels" in knobs:
            current = dict(plan.channels)
            for row in self.channel_scan.layers:
                now = current.get(row.layer, 0.0)
                later = [r for r in row.values if r > now]
                if later:
                    yield plan.with_channels(row.layer, later[0])
        if "bits" in knobs:
            for row in self.bits_scan.layers:
                if row.layer not in plan.low_bits:
                    yield plan.with_low_bits(row.layer)

    def run(self, knobs):
        """`(plan, fits)`: the first measured plan within the limits, or
        the last plan reached when no move is left."""
        plan = Plan()
        correction = dict.fromkeys(("bytes", "latency_us"), 1.0)
        while True:
            estimate = self.estimate(plan, correction)
            if self.fits(estimate) or plan in self.measured:
                if (
                    plan not in self.measured
                    and len(self.measured) >= MAX_MEASUREMENTS
                ):
                    self.log(
                        f"  search: {MAX_MEASUREMENTS} candidate files "
                        "measured; stopping"
                    )
                    return plan, False
                figures = self.measure(plan)
                if self.fits(figures):
                    return plan, True
                # The file says otherwise: predict from it from now on.
                for key in correction:
                    correction[key] *= figures[key] / max(estimate[key], 1e-9)
                estimate = self.estimate(plan, correction)
            best, best_score = None, 0.0
            for candidate in self.moves(plan, knobs):
                after = self.estimate(candidate, correction)
                progress = 0.0
                for key, limit in self.limits.items():
                    excess = estimate[key] - limit
                    if excess > 0:
                        progress += min(
                            1.0, (estimate[key] - after[key]) / excess
                        )
                cost = max(
                    self.predicted_drop(candidate) - self.predicted_drop(plan),
                    self.floor,
                )
                score = progress / cost
                if score > best_score:
                    best, best_score = candidate, score
            if best is None:
                return plan, False
            plan = best

    def undos(self, plan):
        """Plans one move less compressed than `plan`."""
        for name, ratio in plan.channels:
            row = next(r for r in self.channel_scan.layers if r.layer == name)
            lower = [r for r in row.values if r < ratio]
            channels = dict(plan.channels)
            if lower:
                channels[name] = lower[-1]
            else:
                del channels[name]
            yield Plan(tuple(sorted(channels.items())), plan.low_bits)
        for name in plan.low_bits:
            yield Plan(
                plan.channels, tuple(n for n in plan.low_bits if n != name)
            )

    def relax(self, plan):
        """Undoes moves while the measured file still fits.

        The greedy's steps are coarse (a quarter of a group's channels), so
        its first fitting plan often lands well under the budget; each undo
        that still fits gives back predicted accuracy. The most accurate
        undo is tried first; a prediction (scaled by `plan`'s measured
        file) that does not fit is not measured.
        """
        while True:
            anchor = self.measured[plan]
            raw_anchor = self.estimate(plan, dict.fromkeys(anchor, 1.0))
            undos = sorted(self.undos(plan), key=self.predicted_drop)
            for candidate in undos:
                if self.predicted_drop(candidate) >= self.predicted_drop(plan):
                    continue  # no accuracy to win back
                if candidate not in self.measured:
                    scale = {
                        k: anchor[k] / max(raw_anchor[k], 1e-9) for k in anchor
                    }
                    if not self.fits(self.estimate(candidate, scale)):
                        continue
                    if len(self.measured) >= MAX_MEASUREMENTS:
                        return plan
                if self.fits(self.measure(candidate)):
                    plan = candidate
                    break
            else:
                return plan


def measure_untrained(model, plan, target, calibration, x_sample, runs):
    """`{"bytes", "latency_us"}` of `plan`'s file built without training.

    Args:
        model: The original model.
        plan: A `Plan`.
        target: The `compress()` target.
        calibration: Calibration inputs for integer files.
        x_sample: A few inputs to run the file on (latency is measured on
            the first).
        runs: Timed single-sample runs.
    """
    from keras_compress import pruning

    candidate = model
    if plan.channels:
        candidate = pruning.prune_channels(model, layers=dict(plan.channels))
    ptq = None
    if plan.low_bits:
        ptq = steps_lib.QuantizePostTraining(plan.precision(target))
    content = targets_lib.convert_to_target(candidate, target, calibration, ptq)
    check = convert.verify(candidate, content, x_sample, latency_runs=runs)
    return {"bytes": check.bytes, "latency_us": check.latency_s * 1e6}


def measure_layer_latency(model, target, calibration, x_sample, runs):
    """Each layer's latency at the target's 8-bit and 4-bit precision.

    Two untrained files, every layer at one precision, each operator timed
    alone (`convert.op_latencies`) and summed per layer.

    Args:
        model: The original model.
        target: A `compress()` target with a low-bit precision.
        calibration: Calibration inputs for integer files.
        x_sample: Inputs; the first runs each file once for the operators'
            input values.
        runs: Timed runs per operator.

    Returns:
        A `LayerLatencyTable`.
    """
    import warnings

    times = {}
    other = 0.0
    for key, spec in (
        ("base", BASE_PRECISION[target]),
        ("low", LOW_BIT_PRECISION[target]),
    ):
        ptq = steps_lib.QuantizePostTraining(spec)
        with warnings.catch_warnings():
            # A layer without an int4 kernel keeps 8 bits: its time says so.
            warnings.simplefilter("ignore", UserWarning)
            content = targets_lib.convert_to_target(
                model, target, calibration, ptq
            )
        rows = convert.op_latencies(
            content, sample=x_sample[:1], num_runs=max(runs, 1)
        )
        times[key] = {
            layer: seconds * 1e6
            for layer, seconds in convert.layer_latencies(rows).items()
        }
        if key == "base":
            other = 1e6 * sum(
                r.latency_s or 0.0 for r in rows if r.layer is None
            )
    return LayerLatencyTable(times["base"], times["low"], other)
