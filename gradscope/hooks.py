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
  the real ``apply``, then commits the row;
* ``optimizer.assign``/``assign_add``/``assign_sub`` (and the inner
  optimizer's, under a `LossScaleOptimizer`): the size of each update.

Because the gradients are taken where ``apply`` receives them, this records
exactly what ``fit`` (or any custom ``train_step`` that calls
``optimizer.apply``/``apply_gradients``) applies, with no second pass.

Example:

>>> hooks = Hooks(model, recorder, specs)   # doctest: +SKIP
>>> hooks.install(); model.fit(x, y); hooks.remove()   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from gradscope.model_layers import LayerSpec
from gradscope.recorder import Recorder
from gradscope.stats import batch_accuracy, sq_norm


class HookError(RuntimeError):
    """The model or its optimizer cannot be hooked; the message says why."""


def _set(obj: Any, name: str, value: Any) -> None:
    # object.__setattr__ skips Keras' attribute tracking, which would
    # otherwise try to track the wrapper function as model state.
    object.__setattr__(obj, name, value)


def _unset(obj: Any, name: str) -> None:
    if name in obj.__dict__:
        object.__delattr__(obj, name)


class Hooks:
    """Installs and removes gradscope's wrappers on one model."""

    def __init__(self, model: Any, recorder: Recorder, specs: list[LayerSpec]) -> None:
        self.model = model
        self.recorder = recorder
        self.specs = specs
        self.installed: list[tuple[Any, str]] = []
        self.tapped_layers = 0
        variables = list(model.trainable_variables)
        # Map both the Keras variable and the tf.Variable behind it: Keras'
        # optimizer hands update_step the latter.
        self.var_index: dict[int, int] = {}
        watched: dict[int, int] = {}
        for spec in specs:
            for i in spec.var_indices:
                watched[i] = len(watched)
        self.watched_pos = watched  # model var index -> recorder column
        for i, v in enumerate(variables):
            if i in watched:
                self.var_index[id(v)] = watched[i]
                inner = getattr(v, "value", None)
                if isinstance(inner, tf.Variable):
                    self.var_index[id(inner)] = watched[i]
        self.variables = variables

    # -- install / remove ------------------------------------------------------
    def install(self) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not hasattr(optimizer, "apply"):
            raise HookError(
                "the model has no Keras optimizer to hook; compile it (model.compile(optimizer=...)) "
                "before training"
            )
        self._hook_optimizer(optimizer)
        self._hook_loss()
        for i, spec in enumerate(self.specs):
            if self._hook_layer(i, spec.layer):
                self.tapped_layers += 1

    def remove(self) -> None:
        for obj, name in reversed(self.installed):
            _unset(obj, name)
        self.installed.clear()
        self.tapped_layers = 0

    def _patch(self, obj: Any, name: str, wrapper: Callable) -> None:
        _set(obj, name, wrapper)
        self.installed.append((obj, name))

    # -- the optimizer ------------------------------------------------------------
    def _hook_optimizer(self, optimizer: Any) -> None:
        original_apply = optimizer.apply
        recorder = self.recorder
        inner = getattr(optimizer, "inner_optimizer", None)
        if not getattr(optimizer, "built", True) and self.model.built:
            # The loss scale (and the slots) exist only once the optimizer is
            # built; the taps read the scale while the step is traced.
            optimizer.build(self.model.trainable_variables)
        if inner is not None:
            recorder.scale_fn = lambda: optimizer.dynamic_scale
        elif getattr(optimizer, "loss_scale_factor", None):
            factor = float(optimizer.loss_scale_factor)
            recorder.scale_fn = lambda: tf.constant(factor)
        else:
            recorder.scale_fn = None

        @tf.autograph.experimental.do_not_convert
        def apply(grads, trainable_variables=None):
            grads = list(grads)
            tvs = list(trainable_variables) if trainable_variables is not None else list(
                getattr(optimizer, "_trainable_variables", [])
            )
            staged = []
            for g, v in zip(grads, tvs):
                col = self.var_index.get(id(v))
                if col is not None and g is not None:
                    staged.append((col, sq_norm(g)))
            recorder.stage_grads(staged)
            # The norms of the weights this step used, read before the update.
            # The control dependency makes the reductions finish before apply
            # writes the variables, so TensorFlow need not copy them.
            weights = []
            for v in self.variables:
                col = self.var_index.get(id(v))
                if col is not None:
                    weights.append((col, sq_norm(_read(v))))
            if weights and tf.inside_function():
                with tf.control_dependencies([w for _, w in weights]):
                    grads = [g if g is None or isinstance(g, tf.IndexedSlices) else tf.identity(g) for g in grads]
            result = original_apply(grads, trainable_variables)
            recorder.commit(weights)
            return result

        self._patch(optimizer, "apply", apply)
        for opt in (optimizer, inner):
            if opt is not None:
                self._hook_assigns(opt)

    def _hook_assigns(self, opt: Any) -> None:
        recorder = self.recorder
        for method in ("assign_add", "assign_sub", "assign"):
            original = getattr(opt, method)

            @tf.autograph.experimental.do_not_convert
            def wrapper(variable, value, _original=original, _method=method):
                col = self.var_index.get(id(variable))
                if col is not None:
                    if _method == "assign":
                        delta = tf.cast(value, tf.float32) - tf.cast(_read(variable), tf.float32)
                        recorder.stage_update(col, sq_norm(delta))
                    else:
                        recorder.stage_update(col, sq_norm(value))
                return _original(variable, value)

            self._patch(opt, method, wrapper)

    # -- the loss -------------------------------------------------------------------
    def _hook_loss(self) -> None:
        model = self.model
        original = model.compute_loss
        recorder = self.recorder

        @tf.autograph.experimental.do_not_convert
        def compute_loss(*args, **kwargs):
            loss = original(*args, **kwargs)
            names = ("x", "y", "y_pred", "sample_weight")
            bound = dict(zip(names, args))
            bound.update({k: v for k, v in kwargs.items() if k in names})
            if tf.inside_function() or tf.executing_eagerly():
                recorder.stage_scalars(loss, batch_accuracy(bound.get("y"), bound.get("y_pred")))
            return loss

        self._patch(model, "compute_loss", compute_loss)

    # -- the layers -------------------------------------------------------------------
    def _hook_layer(self, index: int, layer: Any) -> bool:
        if layer is self.model:
            return False
        original = layer.call
        recorder = self.recorder

        @tf.autograph.experimental.do_not_convert
        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            # Symbolic calls (building a functional model) and layers whose
            # output is not one float tensor are passed through untouched.
            if not isinstance(out, tf.Tensor) or not out.dtype.is_floating:
                return out
            return _tap(recorder, index, out)

        self._patch(layer, "call", call)
        return True


def _read(variable: Any) -> tf.Tensor:
    """The value of a Keras variable or of the tf.Variable behind it."""
    if isinstance(variable, tf.Variable):
        return tf.convert_to_tensor(variable)
    return tf.convert_to_tensor(variable.value)


def _tap(recorder: Recorder, index: int, out: tf.Tensor) -> tf.Tensor:
    """Identity on ``out`` that stages its statistics both ways."""
    recorder.stage_forward(index, out)
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
            recorder.stage_backprop(index, upstream)
            return upstream

        return tf.identity(x), grad

    return identity(t)
