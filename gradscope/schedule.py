"""Which training steps are recorded, decided on the device.

The counter of optimizer steps lives in a `tf.Variable`, so the decision is
made inside the compiled step with no host round trip: with ``every > 1``
the recording sits in one `tf.cond`, and with ``weights_every > 1`` the weight
and update norms sit in one more.

Example:

>>> schedule = Schedule(every=2)
>>> seen = []
>>> for _ in range(3):
...     seen.append(bool(schedule.recorded()))
...     schedule.advance()
>>> seen
[True, False, True]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf


class Schedule:
    """The step counter and the conditions built on it.

    Args:
        every: record every N-th optimizer step. Defaults to `1`.
        weights_every: of the recorded steps, measure the weight and update
            norms on every N-th only. Defaults to `1`.
    """

    def __init__(self, every: int = 1, weights_every: int = 1) -> None:
        self.every = int(every)
        self.weights_every = int(weights_every)
        with tf.init_scope():
            #: Optimizer steps seen, ever; the global step of the next row.
            self.calls = tf.Variable(0, trainable=False, name="gradscope_calls", dtype=tf.int64)

    def recorded(self) -> tf.Tensor:
        """True on the steps that are recorded."""
        return tf.equal(self.calls % self.every, 0)

    def when_recording(self, fn: Callable[[], Any], skipped: Callable[[], Any] | None = None) -> Any:
        """``fn()`` on recorded steps; with ``every > 1`` inside one `tf.cond`."""
        if self.every == 1:
            return fn()
        return tf.cond(self.recorded(), fn, skipped or (lambda: tf.constant(0)))

    def when_weighing(self, fn: Callable[[], Any], skipped: Callable[[], Any]) -> Any:
        """``fn()`` on the recorded steps that also measure weights and
        updates; one `tf.cond`, or none at all with ``weights_every == 1``."""
        if self.weights_every == 1:
            return fn()
        due = tf.equal(self.calls % (self.every * self.weights_every), 0)
        return tf.cond(due, fn, skipped)

    def advance(self) -> None:
        """Counts one optimizer step (called at the end of each step)."""
        self.calls.assign_add(1)

    def start_at(self, step: int) -> None:
        """Sets the global step of the next step."""
        self.calls.assign(int(step))

    @property
    def step(self) -> int:
        """The global step of the next step (reads the device)."""
        return int(self.calls.numpy())
