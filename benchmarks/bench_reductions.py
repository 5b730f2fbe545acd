"""Why gradscope sums squares through a matrix product under XLA.

What it measures: the CPU time of one squared norm per tensor of the
lecture network's gradients (784-1024-512-512-512-10: 10 tensors, 1.86 M
numbers), summed four ways, each traced in a `tf.function` and, where named
``-xla``, compiled with XLA:

  l2_loss        TensorFlow's fused sum of squares (gradscope without XLA)
  reduce         ``reduce_sum(t * t)``
  matmul         the squares laid out in rows of 128, times a column of ones
                 (``gradscope.stats.sq_norms`` under XLA)
  ones_row       a row of ones times the squares (how the batch sums of the
                 activation statistics are taken without XLA)

Variants run interleaved round by round in one process; the figure is the
median CPU time per call (``time.process_time``, all threads), and the ratio
to ``l2_loss`` without XLA (above 1: cheaper).

    python benchmarks/bench_reductions.py --rounds 25
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from _bench import interleaved_cpu_times

from gradscope.stats import sq_norms

SHAPES = [(784, 1024), (1024,), (1024, 512), (512,), (512, 512), (512,), (512, 512), (512,), (512, 10), (10,)]


def l2_loss(ts: list[tf.Tensor]) -> tf.Tensor:
    return tf.stack([2.0 * tf.nn.l2_loss(t) for t in ts])


def reduce(ts: list[tf.Tensor]) -> tf.Tensor:
    return tf.stack([tf.reduce_sum(t * t) for t in ts])


def ones_row(ts: list[tf.Tensor]) -> tf.Tensor:
    sums = []
    for t in ts:
        m = tf.reshape(t, [-1, t.shape[-1]])
        sums.append(tf.reduce_sum(tf.matmul(tf.ones([1, m.shape[0]]), m * m)))
    return tf.stack(sums)


def variants(tensors: list[tf.Tensor]) -> dict[str, Callable[[], tf.Tensor]]:
    """Each way, traced (and compiled where it says -xla) and warmed up."""
    ways = {"l2_loss": (l2_loss, False), "l2_loss-xla": (l2_loss, True), "reduce-xla": (reduce, True),
            "matmul-xla": (sq_norms, True), "ones_row-xla": (ones_row, True)}
    out = {}
    for name, (way, jit) in ways.items():
        fn = tf.function(lambda way=way: way(tensors), jit_compile=jit)
        fn()
        out[name] = fn
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default 25)")
    parser.add_argument("--calls", type=int, default=40, help="calls per variant per round (default 40)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    tensors = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in SHAPES]
    fns = variants(tensors)
    times = interleaved_cpu_times(fns, args.rounds, args.calls)
    exact = np.array([np.sum(t.numpy().astype(np.float64) ** 2) for t in tensors])
    print(f"bench_reductions: squared norms of {sum(int(np.prod(s)) for s in SHAPES):,} numbers in {len(SHAPES)} "
          f"tensors; {args.rounds} rounds x {args.calls} calls; TF {tf.__version__}")
    print(f"{'way':14s} {'CPU us':>8s} {'vs l2_loss':>10s} {'max rel. error':>15s}")
    for name, fn in fns.items():
        ratio = statistics.median(a / b for a, b in zip(times["l2_loss"], times[name], strict=True))
        error = np.max(np.abs(fn().numpy() / exact - 1))
        print(f"{name:14s} {statistics.median(times[name]) * 1e6:8.0f} {ratio:9.2f}x {error:15.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
