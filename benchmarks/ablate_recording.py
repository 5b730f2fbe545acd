"""Where the recording's cost goes: one part of it left out at a time.

What it measures: the CPU time of the lecture network's compiled Keras
``train_step`` (784-1024-512-512-512-10, tanh, MSE, Adam 1e-3, one fixed
MNIST-shaped batch of 128), called directly in a loop (no ``fit``, so no
data pipeline or callbacks), plain and with a `GradientMonitor`'s hooks in
its trace, and with the monitor's parts switched off one at a time:

  plain     no monitor
  all       GradientMonitor(weights_every=10): everything it records
  -forward  without the activation statistics and histograms
            (activation_stats=False)
  -backprop without the back-propagated gradient's RMS
  -grads    without the gradient norms
  -nothing  the hooks, the row and the weights every 10th step only

Variants whose name ends in ``@1`` measure weights and updates on every
step (``weights_every=1``) instead. A ``+tf`` suffix (``all+tf``,
``all@1+tf``) traces the step with the reductions gradscope uses without
XLA (``l2_loss``, a row of ones times the features), to show what the
XLA-specific ones (`gradscope.stats.in_xla_context`) save under ``--jit``.

It is an ablation, so it reaches into gradscope: it replaces the
recorder's reductions with trivial stand-ins while a variant's step is
traced. The numbers are for understanding, not for the targets (those are
`bench_monitor.py` and `bench_loop.py`).

Design: every variant has its own model and traced step; rounds of --steps
calls per variant run interleaved, in a new random order each round, and
the ratio plain / variant is taken per round, then the median and the
interquartile range over rounds. Single rounds swing by +-5% or more; use
30 rounds or more.

Command (about 2 minutes; ``--jit`` compiles every variant with XLA):

    python benchmarks/ablate_recording.py --rounds 40 --steps 10
    python benchmarks/ablate_recording.py --rounds 30 --steps 10 --jit
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf
from _bench import BATCH, interleaved_cpu_times, mnist_like

import gradscope.recorder as recorder_module
import gradscope.stats as stats_module
from gradscope import GradientMonitor
from gradscope.models import lecture_mlp
from gradscope.staging import Staging

VARIANTS = ("plain", "all", "-forward", "-backprop", "-grads", "-nothing", "all@1", "all+tf", "all@1+tf")


def _stand_in(tensors) -> tf.Tensor:
    """A vector of one element per tensor, read without a pass over them."""
    return tf.stack([tf.cast(tf.reshape(t, [-1])[0], tf.float32) for t in tensors])


@contextmanager
def _without(parts: set[str], tf_reductions: bool = False) -> Iterator[None]:
    """Replaces the recorder's reductions for ``parts`` while a step is traced
    (and, with ``tf_reductions``, the XLA-specific reductions by the others)."""
    saved = (recorder_module.mean_squares, Staging.gradients, stats_module.in_xla_context)
    if tf_reductions:
        stats_module.in_xla_context = lambda: False
    if "backprop" in parts:
        recorder_module.mean_squares = _stand_in
    if "grads" in parts:
        Staging.gradients = lambda self, grads: saved[1](self, [])
    try:
        yield
    finally:
        recorder_module.mean_squares, Staging.gradients, stats_module.in_xla_context = saved


def build(name: str, xs: tf.Tensor, ys: tf.Tensor, jit: bool = False, deep: int = 0) -> Callable[[], object]:
    """A traced, warmed-up train step for one variant (compiled with XLA with ``jit``; on a
    ``deep``-layer MLP of 128 tanh units instead of the lecture network when ``deep``)."""
    model = lecture_mlp(hidden=(128,) * (deep - 1), seed=0) if deep else lecture_mlp(seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(xs, ys, batch_size=BATCH, epochs=1, verbose=0)  # builds the model and the optimizer
    step = tf.function(lambda: model.train_step((xs, ys)), jit_compile=jit)
    if name == "plain":
        step()
        return step
    variant, plus, _ = name.partition("+")
    base, _, every = variant.partition("@")
    parts = {"-forward": {"forward"}, "-backprop": {"backprop"}, "-grads": {"grads"},
             "-nothing": {"forward", "backprop", "grads"}}.get(base, set())
    monitor = GradientMonitor(weights_every=int(every or 10), activation_stats="forward" not in parts)
    monitor.set_model(model)
    monitor.set_params({"verbose": 0, "epochs": 1, "steps": 1})
    monitor.on_train_begin()  # installs the hooks; the step below is traced with them
    with _without(parts, tf_reductions=bool(plus)):
        step()
    step()
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round (default 10)")
    parser.add_argument("--jit", action="store_true", help="compile every variant's step with XLA")
    parser.add_argument("--deep", type=int, default=0,
                        help="a tanh MLP of this many Dense layers of 128 instead of the lecture network")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    names = ["plain"] + [v for v in args.variants if v != "plain"]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    x, y = mnist_like(BATCH)
    xs, ys = tf.constant(x), tf.constant(y)
    steps = {name: build(name, xs, ys, args.jit, args.deep) for name in names}
    times = interleaved_cpu_times(steps, args.rounds, args.steps)

    network = f"{args.deep}-layer x 128 tanh MLP" if args.deep else "lecture_mlp"
    print(f"ablate_recording: {network}, batch {BATCH}, {args.rounds} rounds x {args.steps} steps; "
          f"TF {tf.__version__}, Keras {keras.__version__}" + ("; XLA" if args.jit else ""))
    print(f"{'variant':10s} {'ratio':>7s}  {'IQR':>13s}   "
          "(plain CPU time per step / the variant's, median over rounds)")
    for name in names:
        ratios = sorted(p / v for p, v in zip(times["plain"], times[name], strict=False))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        print(f"{name:10s} {statistics.median(ratios):6.3f}x  {q1:.3f}-{q3:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
