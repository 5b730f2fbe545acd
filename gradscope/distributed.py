"""Recording under `tf.distribute`: one row per global step, of the global batch.

Under `MirroredStrategy` and `MultiWorkerMirroredStrategy` every replica runs
the training step on its share of the global batch and hands its *local*
gradients to ``optimizer.apply``, which all-reduces them. The hooks see each
replica's tensors; the row must describe the step the optimizer applies. So
each replica reduces what it staged to sums (the per-unit sums of its
activations' features, the sums of squares of the back-propagated gradient,
its loss, its accuracy times its batch, and its gradients), and one
``merge_call`` then, in cross-replica context, adds them up over every
replica of every worker (``strategy.reduce``) and writes the row once:

* ``grad_norm`` is the norm of the summed gradients, the very gradient the
  optimizer applies (Keras scales each replica's loss by 1/replicas);
* activation means and RMS come from the summed sums (a mean weighted by
  each replica's batch), a unit is dead only if it is inactive on every
  replica's samples, the histograms bin every replica's batch on one range;
* weights and updates are read once, from the mirrored variables.

The sums are reduced, and the row written, on recorded steps only; each
replica's own sums are taken every step. A replica whose loss, gradients or
activations alone go non-finite is remembered, so the report can name it.

Example:

>>> replica_context() is None  # no strategy here
True
>>> is_chief()
True
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import tensorflow as tf

from gradscope.cluster import check_strategy, is_chief, task  # noqa: F401 - their home is cluster.py
from gradscope.errors import DistributionError
from gradscope.stats import (
    FORWARD_STATS,
    batch_accuracy,
    finite_or_inf,
    placed,
    sq_norms,
    stats_from_unit_sums,
    unit_sums,
)

_NAN = float("nan")
T = TypeVar("T")


# -- where we are ------------------------------------------------------------------
def replica_context() -> Any:
    """The replica context of a `tf.distribute` strategy the code runs in,
    or None (no strategy, or its cross-replica context)."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def replica_key() -> int | None:
    """The id of the replica being traced, or None outside a strategy's replicas.

    Every replica traces the step into the same graph, so what the hooks
    stage is kept per replica under this key.
    """
    ctx = replica_context()
    if ctx is None:
        return None
    rid = tf.get_static_value(ctx.replica_id_in_sync_group)
    return int(rid) if rid is not None else 0


def replica_aliases(variable: Any) -> list[Any]:
    """The per-device copy an optimizer writes in place of a mirrored
    ``variable`` (the first one: every copy gets the same update), or []."""
    inner = getattr(variable, "value", variable)
    copies = getattr(inner, "values", None)
    if isinstance(inner, tf.distribute.DistributedValues) and copies:
        return [copies[0]]
    return []


def outside_strategy(make: Callable[[], T]) -> T:
    """``make()`` with no strategy in scope, so the variables it creates are
    plain ones: gradscope's ring and counters are written once per global
    step, never mirrored (a mirrored variable cannot take a row by scatter).

    A strategy's scope belongs to the thread that entered it, so under one
    (``fit`` called inside ``with strategy.scope():``) this runs ``make`` in a
    thread of its own.
    """
    if not tf.distribute.has_strategy():
        return make()
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = make()
        except BaseException as exc:  # handed to the caller's thread
            done["error"] = exc

    thread = threading.Thread(target=run, name="gradscope-variables")
    thread.start()
    thread.join()
    if "error" in done:
        raise done["error"]
    return done["value"]


# -- the row of a global step --------------------------------------------------------
class ReplicaAlarm:
    """The first step on which some replicas, but not all, went non-finite,
    and the first of them: ``[step, replica]``, ``[-1, -1]`` until then."""

    def __init__(self) -> None:
        with tf.init_scope():
            self.first = tf.Variable([-1, -1], trainable=False, name="gradscope_bad_replica", dtype=tf.int64)

    def note(self, bad: tf.Tensor, step: tf.Tensor) -> None:
        """In the graph: ``bad`` has one entry per replica, > 0 where it went non-finite."""
        hit = bad > 0
        count = tf.reduce_sum(tf.cast(hit, tf.int64))
        new = (count > 0) & (count < tf.size(bad, out_type=tf.int64)) & (self.first[0] < 0)
        value = tf.stack([step, tf.argmax(tf.cast(hit, tf.int32), output_type=tf.int64)])
        self.first.assign(tf.where(new, value, self.first))

    def read(self) -> tuple[int, int] | None:
        step, replica = (int(v) for v in self.first.numpy())
        return None if step < 0 else (step, replica)


_ALARMS: weakref.WeakKeyDictionary[Any, ReplicaAlarm] = weakref.WeakKeyDictionary()


def bad_replica(recorder: Any, step: int) -> int | None:
    """The replica that alone went non-finite at ``step``, if one did."""
    alarm = _ALARMS.get(recorder)
    found = alarm.read() if alarm is not None else None
    return found[1] if found is not None and found[0] == step else None


def commit_across_replicas(recorder: Any, staged: Any, weights: list[tuple[int, Any]]) -> None:
    """In a replica context: this replica's sums, then one row for the global step.

    Args:
        recorder: the `Recorder`.
        staged: what this replica staged (`Staged`).
        weights: ``(column, variable)`` of the watched variables.
    """
    ctx = tf.distribute.get_replica_context()
    if recorder not in _ALARMS:
        _ALARMS[recorder] = ReplicaAlarm()
    alarm = _ALARMS[recorder]
    sums = _replica_sums(recorder, staged, ctx)
    forward_idx = sorted(staged.forward)
    outputs = [staged.forward[i] for i in forward_idx]
    present = [c for c, g in (staged.grads or []) if g is not None]
    zero = [c for c, g in (staged.grads or []) if g is None]
    backprop_idx = sorted(staged.backprop)
    replicas = ctx.num_replicas_in_sync

    def merge(strategy: Any, sums: Any, outputs: Any) -> None:
        # Cross-replica context: what the optimizer staged while it updated
        # the mirrored variables (their first copies) is in this stash.
        cross = recorder.stage.collect()
        L, V = recorder.layout.layers, recorder.layout.variables
        stage = recorder.stage

        def parts() -> dict[str, tf.Tensor]:
            # One tensor at a time: MultiWorkerMirroredStrategy reduces no nests.
            flat = [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in tf.nest.flatten(sums)]
            total = tf.nest.pack_sequence_as(sums, flat)
            scale = total["scale"] / float(replicas)
            alarm.note(total["bad"], recorder.schedule.calls)
            grad = tf.fill([V], _NAN)
            if present:
                grad = placed([V], present, finite_or_inf(stage.unscale(sq_norms(total["grads"]), scale)))
            if zero:
                grad = placed([V], zero, tf.zeros([len(zero)]), base=grad)
            forward = tf.fill([L, len(FORWARD_STATS)], _NAN)
            if forward_idx:
                stats = stats_from_unit_sums(total["forward"], tf.unstack(total["rows"]),
                                             [recorder.activations[i] for i in forward_idx])
                forward = placed([L, len(FORWARD_STATS)], forward_idx, stats)
            backprop = tf.fill([L], _NAN)
            if backprop_idx:
                ms = stage.unscale(total["backprop"][0] / total["backprop"][1], scale)
                backprop = placed([L], backprop_idx, ms)

            def measured() -> tuple[tf.Tensor, tf.Tensor]:
                weight, update = recorder.weights_and_updates(cross, weights)
                return weight, update + total["updates"]

            def not_measured() -> tuple[tf.Tensor, tf.Tensor]:
                nan = tf.fill([V], _NAN)
                return nan, nan

            weight, update = recorder.schedule.when_weighing(measured, not_measured)
            loss, hits, n = tf.unstack(total["scalars"])
            scalars = tf.stack([loss, hits / n, scale])
            return {"forward": forward, "backprop_sq": backprop, "grad_sq": grad,
                    "weight_sq": weight, "update_sq": update, "scalars": scalars}

        gathered = {i: (lambda o=o: strategy.gather(o, axis=0)) for i, o in zip(forward_idx, outputs, strict=True)}
        recorder.write(parts, gathered, cross.slow or staged.slow)

    ctx.merge_call(merge, args=(sums, outputs))


def _replica_sums(recorder: Any, staged: Any, ctx: Any) -> dict[str, Any]:
    """What one replica contributes to the global row: sums that add up over replicas."""
    stage = recorder.stage
    sums: dict[str, Any] = {}
    checks = []
    idx = sorted(staged.forward)
    if idx:
        pairs = [unit_sums(staged.forward[i], recorder.activations[i], stage.saturation_threshold) for i in idx]
        sums["forward"] = [c for c, _ in pairs]
        sums["rows"] = tf.stack([r for _, r in pairs])
        checks.append(tf.stack([tf.reduce_sum(c[:2]) for c, _ in pairs]))
    idx = sorted(staged.backprop)
    if idx:
        ups = [staged.backprop[i] for i in idx]
        sums["backprop"] = tf.stack([sq_norms(ups), tf.stack([tf.cast(tf.size(u), tf.float32) for u in ups])])
    grads = [tf.cast(tf.convert_to_tensor(g), tf.float32) for _, g in (staged.grads or []) if g is not None]
    if grads:
        sums["grads"] = grads
        checks.append(sq_norms(grads))
    if staged.loss is not None:
        loss, y_true, y_pred = staged.loss
        n = tf.cast(tf.shape(y_pred)[0], tf.float32) if isinstance(y_pred, tf.Tensor) else tf.constant(1.0)
        loss = tf.cast(loss, tf.float32)
        sums["scalars"] = tf.stack([loss, batch_accuracy(y_true, y_pred) * n, n])
        checks.append(tf.reshape(loss, [1]))
    else:
        sums["scalars"] = tf.constant([_NAN, _NAN, 1.0])
    # Updates the optimizer made in this replica (no merge_call: XLA on GPUs).
    V = recorder.layout.variables
    update = tf.zeros([V])
    if staged.updates:
        cols = sorted(staged.updates)
        norms = tf.stack([tf.reduce_sum(sq_norms(staged.updates[c])) for c in cols])
        update = tf.tensor_scatter_nd_add(update, [[c] for c in cols], norms)
    sums["updates"] = update
    scale = staged.scale if staged.scale is not None else stage.scale()
    sums["scale"] = tf.cast(scale, tf.float32)
    finite = tf.reduce_all(tf.math.is_finite(tf.concat(checks, 0))) if checks else tf.constant(True)
    sums["bad"] = tf.one_hot(ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync) * (
        1.0 - tf.cast(finite, tf.float32))
    return sums


# -- several devices on one machine --------------------------------------------------
def logical_cpus(devices: int) -> None:
    """Splits the CPU into ``devices`` logical devices (if not split already).

    Raises:
        DistributionError: TensorFlow has already set up its devices, so it
            is too late (this must come before anything runs on TensorFlow).
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    have = tf.config.get_logical_device_configuration(cpu)
    if have and len(have) >= devices:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        raise DistributionError(
            f"cannot split the CPU into {devices} devices: TensorFlow has already set up its devices "
            "(ask for the devices before anything runs on TensorFlow)") from None


def mirrored_on(devices: int) -> tuple[Any, str | None]:
    """A `MirroredStrategy` over ``devices`` GPUs, or as many logical CPU devices.

    Logical devices can only be made before TensorFlow initialises its
    devices, so call this before anything runs on a device.

    Returns:
        The strategy, and a one-line notice when it runs on CPU devices.

    Raises:
        DistributionError: too late to make logical CPU devices.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= devices:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(devices)]), None
    logical_cpus(devices)
    what = f"only {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "no GPU"
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)]), (
        f"gradscope: {what} here, so MirroredStrategy runs on {devices} logical CPU devices "
        "(the same numbers as on GPUs, not faster)")


# -- gradscope.train's step on every replica -------------------------------------------
def strategy_of(model: Any) -> Any:
    """The model's `MirroredStrategy` or `MultiWorkerMirroredStrategy`, or
    None (no strategy: the step runs as it is).

    Raises:
        DistributionError: a strategy gradscope cannot record under.
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        return None
    check_strategy(strategy)
    mirrored = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    return strategy if isinstance(strategy, mirrored) else None


def strategy_scope(model: Any) -> Any:
    """The scope of the model's mirrored strategy (where its optimizer must
    make its slots), or a context that does nothing."""
    strategy = strategy_of(model)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def on_replicas(strategy: Any, step: Any, result: Any) -> Any:
    """``step(x, y)`` run by every replica of ``strategy`` on its share of
    the global batch, then ``result()`` read once in cross-replica context.

    A batch of a distributed dataset comes already split; a plain batch is
    split here, in order, into one contiguous share per replica (of every
    worker: each worker holds the same arrays).
    """

    def run(xb: Any, yb: Any) -> Any:
        if isinstance(xb, tf.distribute.DistributedValues):
            strategy.run(step, args=(xb, yb))
            return result()

        def share(xb: Any, yb: Any) -> Any:
            ctx = tf.distribute.get_replica_context()
            n = tf.shape(xb)[0]
            replicas, r = ctx.num_replicas_in_sync, tf.cast(ctx.replica_id_in_sync_group, tf.int32)
            lo, hi = n * r // replicas, n * (r + 1) // replicas
            return step(xb[lo:hi], yb[lo:hi])

        strategy.run(share, args=(xb, yb))
        return result()

    return run
