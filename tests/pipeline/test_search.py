"""The budget search: per-layer channels and bits, on measured files."""

import keras
import numpy as np
import pytest

from keras_compress.pipeline import search
from keras_compress.pipeline import steps


def _measure(model, target, val):
    calibration = val[0][:64]

    def measure(plan):
        return search.measure_untrained(
            model, plan, target, calibration, val[0][:8], runs=3
        )

    return measure


def _scans(model, val):
    from keras_compress import analysis

    def channels():
        return analysis.channel_sensitivity(model, *val, ratios=(0.25, 0.5))

    def bits():
        return analysis.precision_sensitivity(model, *val, bits=(4,))

    return channels, bits


def _search(model, val, limits, target="tflite-int8"):
    channels, bits = _scans(model, val)
    return search.search(
        model,
        target,
        limits,
        _measure(model, target, val),
        *val,
        channels,
        bits,
        log=lambda *args: None,
    )


def test_the_plans_fit_the_bytes_budget_on_their_measured_files(task):
    model, _, val = task
    base = search.measure_untrained(
        model, search.Plan(), "tflite-int8", val[0][:64], val[0][:8], 3
    )
    limit = 0.8 * base["bytes"]
    result = _search(model, val, {"bytes": limit})
    assert result.fits
    assert result.channel_scan.knob == "channels"
    assert result.bits_scan.knob == "bits"
    measured = {search.Plan.from_dict(c["plan"]): c for c in result.candidates}
    assert measured[search.Plan()]["bytes"] == base["bytes"]
    drops = []
    for plan in result.plans:
        # Every plan handed to training was measured under the budget.
        assert measured[plan]["bytes"] <= limit
        assert plan.channels or plan.low_bits
        drops.append(measured[plan]["predicted_drop"])
    assert drops == sorted(drops)  # the most promising first
    assert 1 <= len(result.plans) <= search.MAX_TRIES
    assert result.seconds["scans"] > 0 and result.seconds["search"] > 0


def test_an_unreachable_budget_returns_the_closest_measured_plan(task):
    model, _, val = task
    result = _search(model, val, {"bytes": 100})
    assert not result.fits
    (plan,) = result.plans
    smallest = min(c["bytes"] for c in result.candidates)
    chosen = [
        c for c in result.candidates if search.Plan.from_dict(c["plan"]) == plan
    ]
    assert chosen[0]["bytes"] == smallest
    assert len(result.candidates) <= search.MAX_MEASUREMENTS


def test_a_float_target_searches_channels_only(task):
    model, _, val = task
    base = search.measure_untrained(
        model, search.Plan(), "tflite-float32", None, val[0][:8], 3
    )
    result = _search(
        model, val, {"bytes": 0.8 * base["bytes"]}, target="tflite-float32"
    )
    assert result.bits_scan is None
    assert any("bits left out" in note for note in result.notes)
    assert result.fits
    assert all(plan.channels and not plan.low_bits for plan in result.plans)


class SubclassedMLP(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(32, activation="relu", name="hidden")
        self.flip = keras.layers.Activation("linear")  # weightless
        self.out = keras.layers.Dense(3, name="out")

    def call(self, x):
        return self.out(self.flip(self.hidden(x)))


def test_a_subclassed_model_searches_bits_and_says_why_not_channels(task):
    _, train, val = task
    keras.utils.set_random_seed(0)
    model = SubclassedMLP()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(*train, epochs=2, verbose=0)
    base = search.measure_untrained(
        model, search.Plan(), "tflite-int8", val[0][:64], val[0][:8], 3
    )
    result = _search(model, val, {"bytes": 0.9 * base["bytes"]})
    assert result.channel_scan is None
    assert any(
        note.startswith("channels left out") and "subclassed" in note.lower()
        for note in result.notes
    ), result.notes
    assert result.fits
    assert all(plan.low_bits and not plan.channels for plan in result.plans)


def test_plan_recipes():
    plan = search.Plan().with_channels("fc1", 0.5).with_low_bits("fc2")
    assert search.Plan.from_dict(plan.as_dict()) == plan
    assert plan.describe() == "fc1 -50% channels, fc2 4-bit"
    prune, ptq = plan.recipe("tflite-int8", epochs=3).steps
    assert isinstance(prune, steps.PruneChannels)
    assert prune.ratio == {"fc1": 0.5} and prune.epochs == 3
    assert prune.schedule == "cosine"
    assert ptq.precision == {"fc2": "w4a8"} and ptq.algorithm == "gptq"
    assert plan.precision("tflite-dynamic") == {"fc2": "w4-dynamic"}
    # Channel pruning inlines nested models: a path becomes its name.
    nested = search.Plan().with_channels("a", 0.25).with_low_bits("block/b")
    assert nested.precision("tflite-int8") == {"b": "w4a8"}
    (qat,) = search.Plan().recipe("tflite-int8", epochs=2).steps
    assert isinstance(qat, steps.QuantizeAware)
    assert search.Plan().recipe("onnx", epochs=2).steps == []


def test_the_cost_model_scales_producers_and_consumers(task):
    model, _, _ = task
    from keras_compress import pruning

    graph = pruning.channel_plan(model, 0.0).graph
    costs = search._CostModel(model, "tflite-int8", graph)
    base_bytes, base_flops, _ = costs.estimate(search.Plan())
    half = search.Plan().with_channels("fc1", 0.5)
    small = pruning.prune_channels(model, layers={"fc1": 0.5})
    # fc1 loses half its units, fc2 half its input rows: exact here. An
    # int8 file holds a byte per kernel value and an int32 per bias.
    expected = sum(
        int(np.prod(w.shape)) * (1 if len(w.shape) == 2 else 4)
        for w in small.weights
    )
    assert costs.estimate(half)[0] == pytest.approx(expected)
    assert costs.estimate(half)[1] < base_flops
    assert costs.estimate(search.Plan().with_low_bits("fc2"))[0] == (
        pytest.approx(base_bytes - 32 * 32 / 2)
    )


def test_the_relaxed_plan_is_the_most_accurate_of_its_neighbours(task):
    """With exact predictions, the plan handed to training fits, and no
    single move undone would both fit and be predicted more accurate."""
    from keras_compress import analysis
    from keras_compress import pruning

    model, _, _ = task
    graph = pruning.channel_plan(model, 0.0).graph
    costs = search._CostModel(model, "tflite-int8", graph)
    row = analysis.LayerSensitivity
    channel_scan = analysis.SensitivityReport(
        0.9,
        (
            row("fc1", 416, (0.25, 0.5, 0.75), (0.89, 0.86, 0.7)),
            row("fc2", 1056, (0.25, 0.5, 0.75), (0.895, 0.88, 0.8)),
        ),
        knob="channels",
    )
    bits_scan = analysis.SensitivityReport(
        0.9,
        (
            row("fc1", 384, (4,), (0.9,)),
            row("fc2", 1024, (4,), (0.85,)),
            row("logits", 96, (4,), (0.88,)),
        ),
        knob="bits",
    )

    def measure(plan):  # the cost model, taken as the truth
        weight_bytes, flops, _ = costs.estimate(plan)
        return {"bytes": int(weight_bytes) + 2000, "latency_us": flops / 100}

    base = measure(search.Plan())
    limit = 0.75 * base["bytes"]
    greedy = search._Greedy(
        costs,
        {"bytes": limit},
        measure,
        channel_scan,
        bits_scan,
        floor=1e-3,
        log=lambda *args: None,
    )
    plan, fits = greedy.run(("channels", "bits"))
    assert fits
    relaxed = greedy.relax(plan)
    margin = limit * search.MARGINS["bytes"]
    assert measure(relaxed)["bytes"] <= margin
    assert greedy.predicted_drop(relaxed) <= greedy.predicted_drop(plan)
    for neighbour in greedy.undos(relaxed):
        if greedy.predicted_drop(neighbour) < greedy.predicted_drop(relaxed):
            assert measure(neighbour)["bytes"] > margin, neighbour


def test_the_cost_model_prices_each_layer_at_its_measured_latency(task):
    model, _, _ = task
    from keras_compress import pruning

    graph = pruning.channel_plan(model, 0.0).graph
    table = search.LayerLatencyTable(
        base={"fc1": 10.0, "fc2": 6.0, "logits": 1.0},
        low={"fc1": 30.0, "fc2": 4.0, "logits": 1.0},
        other=6.0,
    )
    costs = search._CostModel(model, "tflite-int8", graph, table)
    plan = search.Plan()
    _, flops, latency = costs.estimate(plan)
    assert latency == flops  # channels save time as FLOPs say
    per_us = flops / 23.0  # the table's 8-bit file: 6 + 10 + 6 + 1 µs
    # A 4-bit layer slower alone adds the difference (20 µs for fc1); one
    # faster alone (fc2, 2 µs) is not credited.
    assert costs.estimate(plan.with_low_bits("fc1"))[2] == (
        pytest.approx(flops + 20 * per_us)
    )
    assert costs.estimate(plan.with_low_bits("fc2"))[2] == flops
    # With half of fc1's units, fc1's product (and so its delta) halves.
    half = plan.with_channels("fc1", 0.5)
    _, half_flops, half_latency = costs.estimate(half)
    assert half_latency == half_flops < flops
    assert costs.estimate(half.with_low_bits("fc1"))[2] == (
        pytest.approx(half_flops + 10 * per_us)
    )
    # Without a table, latency follows the FLOPs.
    flops_only = search._CostModel(model, "tflite-int8", graph)
    assert flops_only.estimate(plan.with_low_bits("fc1"))[2] == flops


def test_a_latency_budget_measures_each_layer_at_8_and_4_bits(task):
    model, _, val = task
    table = search.measure_layer_latency(
        model, "tflite-int8", val[0][:64], val[0][:8], runs=3
    )
    assert set(table.base) == set(table.low) == {"fc1", "fc2", "logits"}
    assert all(t > 0 for t in [*table.base.values(), *table.low.values()])
    assert table.other >= 0
    base = search.measure_untrained(
        model, search.Plan(), "tflite-int8", val[0][:64], val[0][:8], 3
    )
    channels, bits = _scans(model, val)
    calls = []

    def layer_latency():
        calls.append(1)
        return table

    result = search.search(
        model,
        "tflite-int8",
        {"latency_us": 10 * base["latency_us"], "bytes": 0.8 * base["bytes"]},
        _measure(model, "tflite-int8", val),
        *val,
        channels,
        bits,
        log=lambda *args: None,
        layer_latency_fn=layer_latency,
    )
    assert calls == [1] and result.layer_latency is table
    assert result.as_dict()["layer_latency_us"]["low"] == table.low
    # A bytes budget alone does not time the layers.
    result = search.search(
        model,
        "tflite-int8",
        {"bytes": 0.8 * base["bytes"]},
        _measure(model, "tflite-int8", val),
        *val,
        channels,
        bits,
        log=lambda *args: None,
        layer_latency_fn=layer_latency,
    )
    assert calls == [1] and result.layer_latency is None
