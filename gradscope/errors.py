"""The errors gradscope raises when it cannot record a model; each message says why.

No TensorFlow here: both backends' recordings raise them.
"""

from __future__ import annotations


class HookError(RuntimeError):
    """The model or its optimizer cannot be hooked; the message says why."""


class DistributionError(RuntimeError):
    """A strategy gradscope cannot record under (a `tf.distribute` one, or
    `keras.distribution` on JAX); the message says why."""
