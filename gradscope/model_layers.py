"""Which layers of a Keras model gradscope watches, and what it knows of them.

A watched layer is one that owns trainable variables itself (not through
sub-layers), listed in forward order. Nested models and layers that hold
sub-layers are walked through, so a `Sequential` inside a functional model
shows its `Dense` layers, not one opaque block; a nested layer is named by
its path below the model (``encoder/mha/query``).

One forward pass, traced symbolically, tells three more things (see
`ModelStructure`): the order the layers are called in; the *unit* of each
weighted layer, that is the weightless activation layer (`Activation`,
`ReLU`, `ELU`, `Softmax`, ...) its output goes to, through normalisation
layers at most (conv, batch norm, ReLU), whose output is then where the
layer's statistics are measured; and which layers lie on the model's *main
path*, the one every path from an input to the outputs goes through, as
opposed to a branch that a skip connection (or a parallel branch) bypasses.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LayerSpec:
    """A watched layer and the indices of its variables in the model's list.

    ``tap`` is the layer whose output is measured: the layer itself, or the
    activation layer that completes its unit (``activation_layer`` names
    it). ``main_path`` is False for a layer that some path from the input to
    the output goes around (inside a residual branch).
    """

    name: str
    layer: Any
    var_indices: list[int] = field(default_factory=list)
    var_names: list[str] = field(default_factory=list)
    tap: Any = None
    activation_layer: str | None = None
    main_path: bool = True

    def __post_init__(self) -> None:
        if self.tap is None:
            self.tap = self.layer

    @property
    def activation(self) -> str | None:
        return activation_name(self.tap)

    @property
    def normalization(self) -> bool:
        """A batch, layer or group normalisation layer."""
        return is_normalization(self.layer)

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
            "activation_layer": self.activation_layer,
            "normalization": self.normalization,
            "main_path": self.main_path,
            "params": params,
            "output_shape": shape,
            "variables": list(self.var_names),
            "fan_in": fan_in,
            "fan_out": fan_out,
            "kernel_size": int(np.prod(kernel.shape)) if fan_in is not None else None,
            "initial_kernel_norm": kernel_norm,
        }


def activation_name(layer: Any) -> str | None:
    """The name of a layer's activation ('tanh', 'relu', ...): its built-in
    one, or what an activation layer computes; None if it has none.

    Example:

    >>> import keras
    >>> activation_name(keras.layers.Dense(2, activation="tanh")), activation_name(keras.layers.ReLU(6.0))
    ('tanh', 'relu6')
    """
    import keras

    layers = keras.layers
    if isinstance(layer, layers.ReLU):
        plain = not layer.negative_slope and not layer.threshold
        if plain and layer.max_value is None:
            return "relu"
        return "relu6" if plain and layer.max_value == 6 else "leaky_relu"
    if isinstance(layer, layers.ELU):
        return "elu" if layer.alpha == 1.0 else "elu_alpha"  # the derivative algebra assumes alpha = 1
    for cls, name in ((layers.LeakyReLU, "leaky_relu"), (layers.PReLU, "prelu"), (layers.Softmax, "softmax")):
        if isinstance(layer, cls):
            return name
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = getattr(act, "__name__", None) or type(act).__name__
    return str(name).lower()


def is_activation_layer(layer: Any) -> bool:
    """A layer that only applies a nonlinearity (`Activation`, `ReLU`, `LeakyReLU`, `ELU`, `PReLU`, `Softmax`)."""
    import keras

    layers = keras.layers
    return isinstance(layer, (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU, layers.PReLU,
                              layers.Softmax))


def is_normalization(layer: Any) -> bool:
    """A batch, layer, group or unit normalisation layer."""
    import keras

    layers = keras.layers
    kinds = tuple(getattr(layers, n) for n in ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                                               "UnitNormalization", "RMSNormalization") if hasattr(layers, n))
    return isinstance(layer, kinds)


def is_built(model: Any) -> bool:
    """The model's weights exist: it is built, or (a model with a train_step
    of its own and no call, such as a GAN) every layer it holds is.

    Example:

    >>> import keras
    >>> is_built(keras.Sequential([keras.layers.Dense(2)])), is_built(keras.Sequential([keras.Input((3,)),
    ...                                                                                  keras.layers.Dense(2)]))
    (False, True)
    """
    if getattr(model, "built", False):
        return True
    layers = _all_layers(model)
    return bool(layers) and bool(model.trainable_variables) and all(getattr(la, "built", False) for la in layers)


def _sublayers(layer: Any) -> list[Any]:
    # `_layers` is where Keras 3 tracks the layers assigned to a layer or
    # model; `layers` is the public view for models. Either may be absent.
    subs = getattr(layer, "_layers", None)
    if subs is None:
        subs = getattr(layer, "layers", None)
    return list(subs or [])


def watched_layers(model: Any) -> list[LayerSpec]:
    """The layers that own trainable variables, in forward order, each with its unit and place.

    Variables are matched by identity with ``model.trainable_variables``, so
    the indices line up with the gradients ``fit`` computes. A layer nested
    in another layer or model is named by its path below ``model``
    (``block/dense``).

    Example:

    >>> import keras
    >>> x = keras.Input((4,))
    >>> h = keras.layers.Activation("tanh", name="act")(keras.layers.Dense(3, name="dense")(x))
    >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
    >>> [(s.name, s.activation, s.activation_layer) for s in watched_layers(model)]
    [('dense', 'tanh', 'act'), ('out', 'linear', None)]
    """
    model_vars = list(model.trainable_variables)
    index = {id(v): i for i, v in enumerate(model_vars)}
    specs: list[LayerSpec] = []
    seen: set[int] = set()

    def visit(layer: Any, parent: Any = None, prefix: str = "") -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        nested: set[int] = set()
        for sub in _sublayers(layer):
            nested.update(id(v) for v in sub.trainable_variables)
        own = [v for v in layer.trainable_variables if id(v) not in nested and id(v) in index]
        # An RNN's weights live in its cell: name them after the RNN
        # ("lstm"), which is what the model summary shows.
        is_cell = parent is not None and getattr(parent, "cell", None) is layer
        name = prefix.rstrip("/") if is_cell else prefix + layer.name
        if own and layer is not model:
            spec = LayerSpec(name, layer)
            for v in own:
                spec.var_indices.append(index[id(v)])
                spec.var_names.append(_short_name(v))
            specs.append(spec)
        below = "" if layer is model else (prefix if is_cell else name + "/")
        for sub in _sublayers(layer):
            visit(sub, layer, below)

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
    ordered = _apply_structure(model, specs)
    if ordered is not None:
        return ordered
    # A model whose own input cannot be described (a GAN: a train_step and
    # no call) is read model by model: the generator, the discriminator.
    for sub in _sublayers(model):
        inside = {id(la) for la in _all_layers(sub)} | {id(sub)}
        part = [i for i, s in enumerate(specs) if id(s.layer) in inside]
        if part and hasattr(sub, "inputs"):
            ordered = _apply_structure(sub, [specs[i] for i in part])
            for i, spec in zip(part, ordered or [], strict=False):
                specs[i] = spec
    return specs


def _apply_structure(model: Any, specs: list[LayerSpec]) -> list[LayerSpec] | None:
    """Gives ``specs`` their units and places, and returns them in call order (None: not traceable)."""
    structure = model_structure(model, specs)
    if structure is None:
        return None
    for i, spec in enumerate(specs):
        tap = structure.units.get(i)
        if tap is not None:
            spec.tap, spec.activation_layer = tap, tap.name
        spec.main_path = i not in structure.branches
    return [specs[i] for i in structure.order]


def call_order(model: Any, specs: list[LayerSpec]) -> list[int] | None:
    """The indices of ``specs`` in the order one forward pass calls their
    layers (layers it never calls keep their place, after the others), or
    None when the model's input cannot be described (nothing is run then).

    Example:

    >>> import keras
    >>> x = keras.Input((4,))
    >>> first, second = keras.layers.Dense(3, name="first"), keras.layers.Dense(2, name="second")
    >>> model = keras.Model(x, second(first(x)))
    >>> call_order(model, watched_layers(model))
    [0, 1]
    """
    structure = model_structure(model, specs)
    return None if structure is None else structure.order


@dataclass
class ModelStructure:
    """What one symbolic forward pass tells about the watched layers.

    Args:
        order: the indices of the specs in call order.
        units: spec index -> the activation layer that completes its unit.
        branches: the spec indices whose measured output some path from an
            input to the outputs goes around (a residual or parallel branch).
    """

    order: list[int]
    units: dict[int, Any] = field(default_factory=dict)
    branches: set[int] = field(default_factory=set)


def model_structure(model: Any, specs: list[LayerSpec]) -> ModelStructure | None:
    """The call order, units and branches of ``specs`` (see `ModelStructure`),
    or None when the model's input cannot be described (nothing is run then).

    The forward pass is traced symbolically in a throwaway graph, so no
    arithmetic runs: about as long as building the model once. The result is
    kept while the model lives.
    """
    key = tuple(id(s.layer) for s in specs)
    cached = _STRUCTURES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    structure = _traced_structure(model, specs)
    _STRUCTURES[model] = (key, structure)
    return structure


# A model's structure, kept while the model lives: tracing costs as much as
# a few training steps, and every fit() with a monitor asks again.
_STRUCTURES: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], ModelStructure | None]] = (
    weakref.WeakKeyDictionary())


@dataclass
class _Call:
    layer: Any
    inputs: list[Any]
    output: Any


def _all_layers(model: Any) -> list[Any]:
    found: list[Any] = []
    seen: set[int] = {id(model)}

    def visit(layer: Any) -> None:
        for sub in _sublayers(layer):
            if id(sub) not in seen:
                seen.add(id(sub))
                found.append(sub)
                visit(sub)

    visit(model)
    return found


def _traced_structure(model: Any, specs: list[LayerSpec]) -> ModelStructure | None:
    inputs = _input_shapes(model)
    if inputs is None:
        return None
    import keras

    jax = keras.backend.backend() == "jax"
    trace = _jax_trace if jax else _tf_trace
    try:
        calls, graph = _recorded_calls(model, lambda: trace(model, inputs), _tensor_type(jax))
    except Exception:  # an input the model does not accept: keep the variable order
        return None
    # A call is recorded when it returns, so the innermost layer that made a
    # tensor comes first: it is the tensor's producer, not the block around it.
    first_call: dict[int, int] = {}
    producer: dict[int, _Call] = {}
    consumers: dict[int, list[_Call]] = {}
    for k, c in enumerate(calls):
        first_call.setdefault(id(c.layer), k)
        if c.output is not None:
            producer.setdefault(id(c.output), c)
        leaf = not _sublayers(c.layer)
        for t in c.inputs if leaf else ():
            consumers.setdefault(id(t), []).append(c)
    position = {id(s.layer): i for i, s in enumerate(specs)}
    units = {i: act for act, i in _units(calls, producer, consumers, position)}
    order = sorted(range(len(specs)), key=lambda i: first_call.get(id(specs[i].layer), len(calls) + i))
    last_output: dict[int, Any] = {id(c.layer): c.output for c in calls if c.output is not None}
    measured = {i: last_output.get(id(units.get(i, s.layer))) for i, s in enumerate(specs)}
    # The branches are read off TensorFlow's graph; on JAX every layer counts as on the main path.
    branches = set() if graph is None else _branches(graph, graph.inputs[:len(inputs)], measured)
    return ModelStructure(order, units, branches)


def _tensor_type(jax: bool) -> type:
    """What a traced tensor is on the backend: a `tf.Tensor`, or a JAX tracer."""
    if jax:
        import jax.core

        return jax.core.Tracer
    import tensorflow as tf

    return tf.Tensor


def _recorded_calls(model: Any, run: Callable[[], Any], tensor: type) -> tuple[list[_Call], Any]:
    """Every layer call of one symbolic forward pass (``run()``), as it
    returns, with its tensor inputs and output; and what ``run`` returned."""
    import keras

    calls: list[_Call] = []
    originals = []
    for layer in _all_layers(model):
        original = layer.__dict__.get("call")

        def traced_call(*args, _layer=layer, _call=layer.call, **kwargs):
            out = _call(*args, **kwargs)
            inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, tensor)]
            calls.append(_Call(_layer, inputs, out if isinstance(out, tensor) else None))
            return out

        originals.append((layer, original))
        object.__setattr__(layer, "call", traced_call)
    try:
        result = run()
    finally:
        for layer, original in originals:
            if original is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", original)
    return calls, result


def _tf_trace(model: Any, inputs: list[tuple[tuple, str]]) -> Any:
    """The forward pass traced into a throwaway TensorFlow graph; returns the graph."""
    import tensorflow as tf

    specs = [tf.TensorSpec(shape, dtype) for shape, dtype in inputs]
    signature = specs[0] if len(specs) == 1 else specs
    return tf.function(lambda x: model(x, training=False)).get_concrete_function(signature).graph


def _jax_trace(model: Any, inputs: list[tuple[tuple, str]]) -> None:
    """The forward pass traced abstractly by JAX (no arithmetic runs); a batch of 2 stands for any."""
    import jax

    args = [jax.ShapeDtypeStruct(tuple(2 if d is None else d for d in shape), dtype) for shape, dtype in inputs]
    jax.make_jaxpr(lambda x: model(x, training=False))(args[0] if len(args) == 1 else args)


def _units(calls: list[_Call], producer: dict[int, _Call], consumers: dict[int, list[_Call]],
           position: dict[int, int]) -> list[tuple[Any, int]]:
    """(activation layer, spec index) of each unit: a weightless activation
    layer called once, with one input, made by a watched layer without an activation of
    its own through normalisation layers at most, each output read by the
    next layer only. The unit is named after the first weighted layer that
    is not a normalisation (conv in conv, batch norm, ReLU)."""
    pairs, taken = [], set()
    times: dict[int, int] = {}
    for c in calls:
        times[id(c.layer)] = times.get(id(c.layer), 0) + 1
    for c in calls:
        # An activation layer called more than once (one ReLU shared by
        # several convolutions) belongs to no single unit.
        shared = times[id(c.layer)] > 1
        if not is_activation_layer(c.layer) or c.layer.trainable_weights or len(c.inputs) != 1 or shared:
            continue
        chain, t = [], c.inputs[0]
        while True:
            made = producer.get(id(t))
            if made is None or len(consumers.get(id(t), [])) != 1 or len(made.inputs) != 1:
                break
            chain.append(made.layer)
            if not is_normalization(made.layer):
                break
            t = made.inputs[0]
        weighted = [layer for layer in chain if id(layer) in position]
        if not weighted or activation_name(weighted[-1]) not in (None, "linear"):
            continue
        owner = next((layer for layer in weighted if not is_normalization(layer)), weighted[0])
        if id(owner) not in taken:
            taken.add(id(owner))
            pairs.append((c.layer, position[id(owner)]))
    return pairs


def _branches(graph: Any, sources: list[Any], measured: dict[int, Any]) -> set[int]:
    """The indices in ``measured`` (index -> tensor) whose tensor is not on
    every path from any one source to the graph's outputs: the layers a
    skip connection or a parallel branch goes around. Paths are counted
    over the traced ops (exact integers), so a plain chain has none."""
    ops = graph.get_operations()  # in creation order: every op after its inputs
    position = {op: k for k, op in enumerate(ops)}
    sinks = {t.op for t in graph.outputs}
    # Paths from each op to the outputs, counted backwards.
    to_sink = [0] * len(ops)
    for k in range(len(ops) - 1, -1, -1):
        op = ops[k]
        to_sink[k] = (1 if op in sinks else 0) + sum(to_sink[position[c]] for t in op.outputs
                                                      for c in t.consumers() if c in position)
    on_main: set[int] = set()
    for source in sources:
        start = position.get(source.op)
        if start is None or not to_sink[start]:
            continue
        from_source = [0] * len(ops)
        from_source[start] = 1
        for k in range(start, len(ops)):
            if from_source[k]:
                for t in ops[k].outputs:
                    for c in t.consumers():
                        if c in position:
                            from_source[position[c]] += from_source[k]
        total = to_sink[start]
        for i, t in measured.items():
            k = position.get(getattr(t, "op", None))
            if k is not None and from_source[k] * to_sink[k] == total:
                on_main.add(i)
    # A tensor outside the traced graph (inside a loop body) counts as main path.
    return {i for i, t in measured.items() if i not in on_main and getattr(t, "op", None) in position}


def _input_shapes(model: Any) -> list[tuple[tuple, str]] | None:
    """``(shape, dtype)`` of each of the model's inputs (None for the batch):
    from its symbolic inputs, or from the shape it was built with; None when
    neither describes them."""
    try:
        inputs = list(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):
        inputs = []
    if inputs:
        return [(tuple(t.shape), str(t.dtype)) for t in inputs]
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        return None
    shape = next(iter(shapes.values()))
    if not isinstance(shape, (tuple, list)) or not all(d is None or isinstance(d, int) for d in shape):
        return None
    return [(tuple(shape), "float32")]


def _short_name(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return str(path).rsplit("/", 1)[-1].split(":")[0]
