"""Which layers of a Keras model gradscope watches, and what it knows of them.

A watched layer is one that owns trainable variables itself (not through
sub-layers), listed in forward order. Nested models and layers that hold
sub-layers are walked through, so a `Sequential` inside a functional model
shows its `Dense` layers, not one opaque block.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
...                           keras.layers.Dense(2, name="dense_1")])
>>> specs = watched_layers(model)
>>> [s.name for s in specs]
['dense', 'dense_1']
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LayerSpec:
    """A watched layer and the indices of its variables in the model's list."""

    name: str
    layer: Any
    var_indices: list[int] = field(default_factory=list)
    var_names: list[str] = field(default_factory=list)

    @property
    def activation(self) -> str | None:
        return activation_name(self.layer)

    def info(self, model_vars: list[Any]) -> dict[str, Any]:
        """Plain facts for the record (JSON-able, no TensorFlow objects)."""
        variables = [model_vars[i] for i in self.var_indices]
        params = int(sum(int(np.prod(v.shape)) for v in variables))
        kernel = next((v for v, n in zip(variables, self.var_names, strict=False) if n == "kernel"), None)
        fan_in = fan_out = kernel_norm = None
        if kernel is not None and len(kernel.shape) >= 2:
            receptive = int(np.prod(kernel.shape[:-2])) if len(kernel.shape) > 2 else 1
            fan_in = int(kernel.shape[-2]) * receptive
            fan_out = int(kernel.shape[-1]) * receptive
            # Read now, before the record's first update: the initial weight
            # gains that the diagnosis judges come from it.
            values = kernel.numpy() if hasattr(kernel, "numpy") else kernel
            kernel_norm = float(np.linalg.norm(np.asarray(values, np.float64)))
        units = getattr(self.layer, "units", None) or getattr(self.layer, "filters", None)
        try:
            shape = str(tuple(self.layer.output.shape))
        except (AttributeError, ValueError, RuntimeError):
            shape = None
        return {
            "name": self.name,
            "class": type(self.layer).__name__,
            "units": int(units) if units is not None else None,
            "activation": self.activation,
            "params": params,
            "output_shape": shape,
            "variables": list(self.var_names),
            "fan_in": fan_in,
            "fan_out": fan_out,
            "initial_kernel_norm": kernel_norm,
        }


def activation_name(layer: Any) -> str | None:
    """The name of a layer's built-in activation ('tanh', 'relu', ...), if it has one."""
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", None) or type(act).__name__
    return str(name).lower()


def _sublayers(layer: Any) -> list[Any]:
    # `_layers` is where Keras 3 tracks the layers assigned to a layer or
    # model; `layers` is the public view for models. Either may be absent.
    subs = getattr(layer, "_layers", None)
    if subs is None:
        subs = getattr(layer, "layers", None)
    return list(subs or [])


def watched_layers(model: Any) -> list[LayerSpec]:
    """The layers that own trainable variables, in forward order.

    Variables are matched by identity with ``model.trainable_variables``, so
    the indices line up with the gradients ``fit`` computes.
    """
    model_vars = list(model.trainable_variables)
    index = {id(v): i for i, v in enumerate(model_vars)}
    specs: list[LayerSpec] = []
    seen: set[int] = set()

    def visit(layer: Any, parent: Any = None) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        nested: set[int] = set()
        for sub in _sublayers(layer):
            nested.update(id(v) for v in sub.trainable_variables)
        own = [v for v in layer.trainable_variables if id(v) not in nested and id(v) in index]
        if own and layer is not model:
            # An RNN's weights live in its cell: name them after the RNN
            # ("lstm"), which is what the model summary shows.
            name = parent.name if parent is not None and getattr(parent, "cell", None) is layer else layer.name
            spec = LayerSpec(name, layer)
            for v in own:
                spec.var_indices.append(index[id(v)])
                spec.var_names.append(_short_name(v))
            specs.append(spec)
        for sub in _sublayers(layer):
            visit(sub, layer)

    visit(model)
    # A model that owns variables directly (rare) has them reported under its name.
    claimed = {i for s in specs for i in s.var_indices}
    leftover = [i for i in range(len(model_vars)) if i not in claimed]
    if leftover:
        specs.append(
            LayerSpec(model.name, model, leftover, [_short_name(model_vars[i]) for i in leftover])
        )
    # Keras lists variables in the order the layers were *assigned* (for a
    # subclassed model, the order of its __init__), not called. That is the
    # forward order for Sequential and functional models, and a fallback.
    specs.sort(key=lambda s: min(s.var_indices))
    order = call_order(model, specs)
    if order is not None:
        specs = [specs[i] for i in order]
    return specs


def call_order(model: Any, specs: list[LayerSpec]) -> list[int] | None:
    """The indices of ``specs`` in the order one forward pass calls their
    layers (layers it never calls keep their place, after the others), or
    None when the model's input cannot be described (nothing is run then).

    The forward pass is traced symbolically in a throwaway graph, so no
    arithmetic runs: about as long as building the model once.

    Example:

    >>> import keras
    >>> x = keras.Input((4,))
    >>> first, second = keras.layers.Dense(3, name="first"), keras.layers.Dense(2, name="second")
    >>> model = keras.Model(x, second(first(x)))
    >>> call_order(model, watched_layers(model))
    [0, 1]
    """
    key = tuple(id(s.layer) for s in specs)
    cached = _ORDERS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    order = _traced_order(model, specs)
    _ORDERS[model] = (key, order)
    return order


# A model's call order, kept while the model lives: tracing costs as much as
# a few training steps, and every fit() with a monitor asks again.
_ORDERS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], list[int] | None]] = weakref.WeakKeyDictionary()


def _traced_order(model: Any, specs: list[LayerSpec]) -> list[int] | None:
    signature = _input_signature(model)
    if signature is None:
        return None
    import tensorflow as tf

    seen: list[int] = []
    originals = []
    for i, spec in enumerate(specs):
        layer = spec.layer
        if layer is model:
            continue
        original = layer.__dict__.get("call")

        def traced_call(*args, _i=i, _call=layer.call, **kwargs):
            if _i not in seen:
                seen.append(_i)
            return _call(*args, **kwargs)

        originals.append((layer, original))
        object.__setattr__(layer, "call", traced_call)
    try:
        tf.function(lambda x: model(x, training=False)).get_concrete_function(signature)
    except Exception:  # an input the model does not accept: keep the variable order
        return None
    finally:
        for layer, original in originals:
            if original is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", original)
    return seen + [i for i in range(len(specs)) if i not in seen]


def _input_signature(model: Any) -> Any:
    """A `tf.TensorSpec` (or a structure of them) for the model's input:
    from its symbolic inputs, or from the shape it was built with."""
    import tensorflow as tf

    try:
        inputs = list(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):
        inputs = []
    if inputs:
        specs = [tf.TensorSpec(tuple(t.shape), t.dtype) for t in inputs]
        return specs[0] if len(specs) == 1 else specs
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        return None
    shape = next(iter(shapes.values()))
    if not isinstance(shape, (tuple, list)) or not all(d is None or isinstance(d, int) for d in shape):
        return None
    return tf.TensorSpec(tuple(shape), tf.float32)


def _short_name(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return str(path).rsplit("/", 1)[-1].split(":")[0]
