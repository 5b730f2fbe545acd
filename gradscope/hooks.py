"""Where gradscope hooks into a Keras model, and how it lets go again.

Keras callbacks never see gradients: ``train_step`` returns only logs. So
gradscope wraps, on the *instances* only (never the classes), the few
methods every training step goes through:

* each watched layer's ``call``: its output passes through an identity whose
  forward side stages the activation statistics and whose gradient side
  stages the back-propagated gradient d(loss)/d(output);
* ``model.compute_loss``: stages the batch loss and accuracy;
* ``optimizer.apply``: stages the gradients the optimizer is given (divided
  by the loss scale under mixed precision, so they are what is applied), runs
  the real ``apply``, then commits the row (which reads the updated weights);
* ``optimizer.assign``/``assign_add``/``assign_sub`` (and the inner
  optimizer's, under a `LossScaleOptimizer`): the size of each update.

Because the gradients are taken where ``apply`` receives them, this records
exactly what ``fit`` (or any custom ``train_step`` that calls
``optimizer.apply``/``apply_gradients``) applies, with no second pass.

Example:

>>> import numpy as np, keras
>>> from gradscope.model_layers import watched_layers
>>> from gradscope.recorder import Recorder
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
>>> model.compile(optimizer="sgd", loss="mse")
>>> specs = watched_layers(model)
>>> recorder = Recorder([s.activation for s in specs], [i for i, s in enumerate(specs) for _ in s.var_indices])
>>> hooks = Hooks(model, recorder, specs)
>>> hooks.install()
>>> _ = model.fit(np.ones((8, 3)), np.ones((8, 2)), batch_size=4, verbose=0)
>>> hooks.remove()
>>> recorder.flush().steps.tolist()
[0, 1]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from gradscope.distributed import replica_aliases, strategy_scope
from gradscope.errors import HookError
from gradscope.instance_wrappers import unwrap, wrap
from gradscope.model_layers import LayerSpec
from gradscope.recorder import Recorder


class Hooks:
    """Installs and removes gradscope's wrappers on one model.

    The wrappers come in two groups: the optimizer's (``apply`` and the
    assigns), which only training calls, and the forward ones (layer
    ``call`` and ``compute_loss``), which evaluation and prediction call
    too. `suspend` takes the forward group off while Keras traces a test or
    predict function, so those carry no statistics.
    """

    def __init__(self, model: Any, recorder: Recorder, specs: list[LayerSpec]) -> None:
        self.model = model
        self.recorder = recorder
        self.specs = specs
        # (object, method name, wrapper, group) for every installed wrapper.
        self.installed: list[tuple[Any, str, Callable, str]] = []
        self.suspended = False
        #: Recorder column -> the optimizer that applied its gradient (its
        #: attribute name on the model), filled while the step is traced.
        self.applied_by: dict[int, str] = {}
        self.variables = list(model.trainable_variables)
        # Recorder column of each watched variable, by the identity of both
        # the Keras variable and the tf.Variable behind it: Keras' optimizer
        # hands update_step the latter.
        self.var_index: dict[int, int] = {}
        column = 0
        for spec in specs:
            for i in spec.var_indices:
                v = self.variables[i]
                self.var_index[id(v)] = column
                inner = getattr(v, "value", None)
                if isinstance(inner, tf.Variable):
                    self.var_index[id(inner)] = column
                for alias in replica_aliases(v):  # under tf.distribute, the copy the optimizer writes
                    self.var_index[id(alias)] = column
                column += 1

    # -- install / remove ------------------------------------------------------
    def install(self) -> None:
        optimizers = model_optimizers(self.model)
        if not optimizers:
            raise HookError(
                "the model has no Keras optimizer to hook; compile it (model.compile(optimizer=...)) "
                "before training"
            )
        if len(optimizers) == 1:
            self._hook_optimizer(next(iter(optimizers.values())))
        else:
            # A train_step of its own may apply several (a GAN's d_optimizer
            # and g_optimizer): each stages its gradients, and the row is
            # committed once, when train_step returns.
            self.recorder.stage.scale_fn = None
            for label, optimizer in optimizers.items():
                self._hook_optimizer(optimizer, label, commit=False)
            self._hook_train_step()
        self._hook_loss()
        for i, spec in enumerate(self.specs):
            if spec.layer is not self.model:
                # The unit's output: the layer's own, or its activation layer's.
                self._hook_layer(i, spec.tap)

    def remove(self) -> None:
        for obj, name, _, _ in reversed(self.installed):
            unwrap(obj, name)
        self.installed.clear()
        self.suspended = False

    def suspend(self) -> None:
        """Takes the forward wrappers off (evaluation, prediction)."""
        if not self.suspended:
            for obj, name, _, group in self.installed:
                if group == "forward":
                    unwrap(obj, name)
            self.suspended = True

    def resume(self) -> None:
        if self.suspended:
            for obj, name, wrapper, group in self.installed:
                if group == "forward":
                    object.__setattr__(obj, name, wrapper)
            self.suspended = False

    def _patch(self, obj: Any, name: str, make: Callable[[Callable], Callable], group: str) -> None:
        wrapper = wrap(obj, name, make, tf.autograph.experimental.do_not_convert)
        self.installed.append((obj, name, wrapper, group))

    # -- the optimizer ------------------------------------------------------------
    def _hook_optimizer(self, optimizer: Any, label: str = "optimizer", commit: bool = True) -> None:
        recorder = self.recorder
        inner = getattr(optimizer, "inner_optimizer", None)
        if commit:
            # (One of several optimizers updates only part of the model: it is
            # left to build itself with its own variables.)
            self._read_loss_scale(optimizer)

        def make_apply(original_apply: Callable) -> Callable:
            def apply(grads, trainable_variables=None):
                grads = list(grads)
                tvs = list(trainable_variables) if trainable_variables is not None else list(
                    getattr(optimizer, "_trainable_variables", [])
                )
                # A None gradient (a branch the loss does not reach) counts as zero.
                grad_cols = [
                    (self.var_index[id(v)], g) for g, v in zip(grads, tvs, strict=False) if id(v) in self.var_index
                ]
                self.applied_by.update({c: label for c, _ in grad_cols})
                recorder.stage.gradients(grad_cols)
                result = original_apply(grads, trainable_variables)
                if commit:
                    # The weight norms are read after the update: reading them
                    # before would make TensorFlow copy every weight it updates
                    # (copy-on-write), or make apply wait for the norms.
                    recorder.commit(self.weight_columns())
                return result

            return apply

        self._patch(optimizer, "apply", make_apply, "optimizer")
        for opt in (optimizer, inner):
            if opt is not None:
                for method in ("assign_add", "assign_sub", "assign"):
                    self._patch(opt, method, self._make_assign(method), "optimizer")

    def _read_loss_scale(self, optimizer: Any) -> None:
        inner = getattr(optimizer, "inner_optimizer", None)
        if not getattr(optimizer, "built", True) and self.model.built:
            # The loss scale (and the slots) exist only once the optimizer is
            # built; the taps read the scale while the step is traced.
            with strategy_scope(self.model):  # under tf.distribute, slots are made in its scope
                optimizer.build(self.model.trainable_variables)
        if inner is not None:
            self.recorder.stage.scale_fn = lambda: optimizer.dynamic_scale
        elif getattr(optimizer, "loss_scale_factor", None):
            factor = float(optimizer.loss_scale_factor)
            self.recorder.stage.scale_fn = lambda: tf.constant(factor)
        else:
            self.recorder.stage.scale_fn = None

    def weight_columns(self) -> list[tuple[int, Any]]:
        """``(column, variable)`` of every watched variable."""
        return [(self.var_index[id(v)], v) for v in self.variables if id(v) in self.var_index]

    def _hook_train_step(self) -> None:
        """Commits the step's row when train_step returns, after every optimizer it applied."""

        def make(original: Callable) -> Callable:
            def train_step(*args, **kwargs):
                result = original(*args, **kwargs)
                self.recorder.commit(self.weight_columns())
                return result

            return train_step

        self._patch(self.model, "train_step", make, "optimizer")

    def _make_assign(self, method: str) -> Callable[[Callable], Callable]:
        def make(original: Callable) -> Callable:
            def assign(variable, value):
                col = self.var_index.get(id(variable))
                if col is not None and not (method == "assign" and isinstance(value, tf.IndexedSlices)):
                    self.recorder.stage.update(col, value, variable if method == "assign" else None)
                return original(variable, value)

            return assign

        return make

    # -- the loss -------------------------------------------------------------------
    def _hook_loss(self) -> None:
        recorder = self.recorder

        def make(original: Callable) -> Callable:
            def compute_loss(*args, **kwargs):
                loss = original(*args, **kwargs)
                names = ("x", "y", "y_pred", "sample_weight")
                bound = dict(zip(names, args, strict=False))
                bound.update({k: v for k, v in kwargs.items() if k in names})
                recorder.stage.loss(loss, bound.get("y"), bound.get("y_pred"))
                return loss

            return compute_loss

        self._patch(self.model, "compute_loss", make, "forward")

    # -- the layers -------------------------------------------------------------------
    def _hook_layer(self, index: int, layer: Any) -> None:
        recorder = self.recorder

        def make(original: Callable) -> Callable:
            def call(*args, **kwargs):
                out = original(*args, **kwargs)
                # Symbolic calls (building a functional model) and layers whose
                # output is not one float tensor are passed through untouched.
                if not isinstance(out, tf.Tensor) or not out.dtype.is_floating:
                    return out
                return _tap(recorder, index, out)

            return call

        self._patch(layer, "call", make, "forward")


def model_optimizers(model: Any) -> dict[str, Any]:
    """The Keras optimizers a model's training step may apply, by attribute
    name: ``model.optimizer``, and any other optimizer the model holds as an
    attribute (a GAN's ``d_optimizer`` and ``g_optimizer``).

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> model.critic_optimizer = keras.optimizers.Adam()
    >>> sorted(model_optimizers(model))
    ['critic_optimizer', 'optimizer']
    """
    import keras

    found: dict[str, Any] = {}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and hasattr(optimizer, "apply"):
        found["optimizer"] = optimizer
    for name, value in vars(model).items():
        if isinstance(value, keras.optimizers.Optimizer) and not name.startswith("_") and all(
                value is not o for o in found.values()):
            found[name] = value
    return found


def _tap(recorder: Recorder, index: int, out: tf.Tensor) -> tf.Tensor:
    """Identity on ``out`` that stages its statistics both ways."""
    recorder.stage.forward(index, out)
    tapped = _backprop_probe(recorder, index, out)
    logits = getattr(out, "_keras_logits", None)
    if logits is not None:
        # Keras' softmax/sigmoid outputs carry their logits, and its
        # cross-entropy losses read them instead of the probabilities (for
        # numerical stability). Keep that link, or the hook would change the
        # loss fit computes; the gradient then flows through the logits, so
        # that is where the back-propagated gradient is measured.
        try:
            tapped._keras_logits = _backprop_probe(recorder, index, logits)
        except AttributeError:
            pass
    return tapped


def _backprop_probe(recorder: Recorder, index: int, t: tf.Tensor) -> tf.Tensor:
    """Identity whose gradient function stages d(loss)/d(t)."""

    @tf.custom_gradient
    def identity(x):
        def grad(upstream):
            recorder.stage.backprop(index, upstream)
            return upstream

        return tf.identity(x), grad

    return identity(t)
