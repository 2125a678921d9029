import keras
import pytest

from keras_compress import pruning


def test_constant_sparsity_updates_every_frequency_steps():
    schedule = pruning.ConstantSparsity(0.6, begin_step=10, frequency=5)
    updates = [step for step in range(40) if schedule.should_update(step)]
    assert updates == [10, 15, 20, 25, 30, 35]
    assert schedule(9) == (False, 0.0)
    assert schedule(20) == (True, 0.6)


def test_constant_sparsity_stops_at_end_step():
    schedule = pruning.ConstantSparsity(0.5, 0, end_step=12, frequency=5)
    updates = [step for step in range(30) if schedule.should_update(step)]
    # The end step itself is an update step even off the frequency grid.
    assert updates == [0, 5, 10, 12]


def test_polynomial_decay_matches_formula():
    schedule = pruning.PolynomialDecay(
        0.1, 0.8, begin_step=100, end_step=300, power=3, frequency=10
    )
    assert schedule.sparsity_at(100) == pytest.approx(0.1)
    for step in (120, 200, 277):
        p = (step - 100) / 200
        expected = 0.8 + (0.1 - 0.8) * (1 - p) ** 3
        assert schedule.sparsity_at(step) == pytest.approx(expected)
    assert schedule.sparsity_at(300) == pytest.approx(0.8)
    assert schedule.sparsity_at(10_000) == pytest.approx(0.8)
    assert schedule.sparsity_at(50) == 0.0


def test_polynomial_decay_reaches_final_sparsity_off_grid():
    # 70 % of 938 fine-tune steps is not a multiple of 50: tfmot never
    # reaches the final sparsity here, we update at end_step too.
    schedule = pruning.PolynomialDecay(0.0, 0.8, 0, 656, frequency=50)
    last = max(s for s in range(2000) if schedule.should_update(s))
    assert last == 656
    assert schedule(656) == (True, pytest.approx(0.8))
    assert not schedule.should_update(700)


def test_sparsity_rises_monotonically():
    schedule = pruning.PolynomialDecay(0.0, 0.9, 0, 1000, frequency=1)
    values = [schedule.sparsity_at(s) for s in range(0, 1001, 50)]
    assert values == sorted(values)


@pytest.mark.parametrize(
    "schedule",
    [
        pruning.ConstantSparsity(0.3, 5, end_step=50, frequency=7),
        pruning.PolynomialDecay(0.2, 0.7, 1, 99, power=2, frequency=3),
    ],
)
def test_schedule_serialization_round_trip(schedule):
    config = keras.saving.serialize_keras_object(schedule)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    for step in range(0, 120, 11):
        assert restored(step) == schedule(step)


def test_custom_schedule_subclass():
    class Linear(pruning.PruningSchedule):
        def __init__(self, final, begin_step, end_step, frequency=10):
            super().__init__(begin_step, end_step, frequency)
            self.final = final

        def sparsity_at(self, step):
            return self.final * self.progress(step)

    schedule = Linear(0.5, 0, 100)
    assert schedule(50) == (True, pytest.approx(0.25))
    assert schedule(55) == (False, pytest.approx(0.275))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: pruning.ConstantSparsity(1.0, 0), "target_sparsity=1.0"),
        (lambda: pruning.ConstantSparsity(-0.1, 0), "target_sparsity=-0.1"),
        (lambda: pruning.PolynomialDecay(0.0, 1.2, 0, 10), "final_sparsity"),
        (lambda: pruning.PolynomialDecay(0.0, 0.5, 20, 10), "end_step"),
        (lambda: pruning.ConstantSparsity(0.5, 0, frequency=0), "frequency=0"),
        (lambda: pruning.ConstantSparsity(0.5, -3), "begin_step=-3"),
        (lambda: pruning.PolynomialDecay(0.0, 0.5, 0, 10, power=0), "power"),
        (
            lambda: pruning.PolynomialDecay(0.9, 0.1, 0, 10),
            "below `initial_sparsity`=0.9.*cannot go down",
        ),
    ],
)
def test_bad_schedule_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
