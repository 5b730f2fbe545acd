"""Which steps are recorded: decided on the device, from one counter."""

import tensorflow as tf

from gradscope.schedule import Schedule


def _trace(schedule: Schedule, steps: int) -> tuple[list[bool], list[bool]]:
    """Per step: recorded, and weighed (weights measured), as the graph decides."""

    @tf.function
    def step():
        weighed = schedule.when_recording(
            lambda: schedule.when_weighing(lambda: tf.constant(True), lambda: tf.constant(False)),
            lambda: tf.constant(False),
        )
        recorded = schedule.recorded()
        schedule.advance()
        return recorded, weighed

    out = [step() for _ in range(steps)]
    return [bool(r) for r, _ in out], [bool(w) for _, w in out]


def test_every_and_weights_every_pick_their_steps():
    recorded, weighed = _trace(Schedule(every=2, weights_every=3), 13)
    assert [i for i, r in enumerate(recorded) if r] == [0, 2, 4, 6, 8, 10, 12]
    assert [i for i, w in enumerate(weighed) if w] == [0, 6, 12]


def test_start_at_moves_the_counter():
    schedule = Schedule(every=5)
    schedule.start_at(3)
    recorded, _ = _trace(schedule, 3)
    assert recorded == [False, False, True] and schedule.step == 6
