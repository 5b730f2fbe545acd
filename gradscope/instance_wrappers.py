"""Wrapping a method on one object (a model, a layer, an optimizer), never its class, and unwrapping it.

Both backends' hooks wrap the few methods a training step goes through.
The wrapper is set on the instance only, marked with the method it
replaces, so a wrapper left behind (by a fit interrupted before its end) is
recognised and removed before a new one goes on: wrappers never stack. No
TensorFlow here.

Example:

>>> class Greeter:
...     def hello(self):
...         return "hello"
>>> g = Greeter()
>>> _ = wrap(g, "hello", lambda original: lambda: original().upper())
>>> g.hello()
'HELLO'
>>> unwrap(g, "hello")
>>> g.hello()
'hello'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The attribute on a wrapper that holds the method it replaced.
MARK = "__gradscope_original__"


def wrap(obj: Any, name: str, make: Callable[[Callable], Callable],
         finish: Callable[[Callable], Callable] | None = None) -> Callable:
    """Sets ``make(original)`` as ``obj.name`` on the instance; returns the wrapper.

    Args:
        obj: the object whose method is wrapped.
        name: the method's name.
        make: ``original -> wrapper``.
        finish: applied to the wrapper before it is set (TensorFlow's
            ``do_not_convert``, say). Defaults to `None`.
    """
    unwrap(obj, name)
    original = getattr(obj, name)
    wrapper = make(original)
    if finish is not None:
        wrapper = finish(wrapper)
    setattr(wrapper, MARK, original)
    # object.__setattr__ skips Keras' attribute tracking, which would
    # otherwise try to track the wrapper function as model state.
    object.__setattr__(obj, name, wrapper)
    return wrapper


def unwrap(obj: Any, name: str) -> None:
    """Removes a gradscope wrapper from ``obj.name``, if one is there."""
    current = obj.__dict__.get(name)
    if current is not None and hasattr(current, MARK):
        object.__delattr__(obj, name)
