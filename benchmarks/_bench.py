"""Shared helpers of the gradscope benchmarks; not a benchmark itself.

What every benchmark here does the same way:

* synthetic MNIST-shaped data (`mnist_like`): x float32 uniform in [0, 1],
  shape (N, 784); y one-hot over 10 classes;
* one `StepClock` per timed call: `time.process_time()` (CPU time of the
  whole process, all threads) and `time.perf_counter()` (wall) at the start
  and after every batch, giving both the whole call's cost and the per-step
  cost once the call is warm;
* ratios, never raw times, as the result: ``baseline cost / variant cost``
  per round (so above 1 means faster than the baseline), then the median
  over rounds. Pairing within a round cancels slow drifts of the machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out of the tables

import gc
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

BATCH = 128


def interleaved_cpu_times(calls: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """CPU seconds per call of each function, one figure per round: every round calls each
    function ``repeats`` times, the functions in a new random order each round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls)
        random.Random(r).shuffle(order)
        for name in order:
            t0 = time.process_time()
            for _ in range(repeats):
                calls[name]()
            times[name].append((time.process_time() - t0) / repeats)
    return times


def parse(parser, argv: list[str] | None):
    """Adds the flags every benchmark shares, parses, and checks them."""
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--steps", type=int, default=100, help="steps of 128 per call (default 100)")
    parser.add_argument("--skip", type=int, default=5, help="first steps of a call left out of 'steady' (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps <= args.skip:
        parser.error(f"--steps must be larger than --skip ({args.skip})")
    return args


def mnist_like(samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped random data: x (N, 784) float32 in [0, 1), y one-hot (N, 10)."""
    rng = np.random.default_rng(seed)
    x = rng.random((samples, 784), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, samples)]
    return x, y


class StepClock(keras.callbacks.Callback):
    """Reads the CPU and wall clocks at train begin and after every batch.

    Put it last in the callback list, so each interval holds everything the
    other callbacks (a `GradientMonitor` among them) do for that batch. It
    only overrides ``on_train_begin``/``on_train_batch_end`` and reads no
    logs; Keras' TensorFlow backend dispatches batch callbacks synchronously
    in any case, so adding it changes nothing about how ``fit`` runs.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.cpu = [time.process_time()]
        self.wall = [time.perf_counter()]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.cpu.append(time.process_time())
        self.wall.append(time.perf_counter())

    def steady(self, skip: int) -> tuple[float, float]:
        """Median CPU and wall seconds of one step, leaving out the first ``skip`` steps.

        The first interval holds the trace (when there is one) and the first
        steps after a trace warm the allocator; the median also leaves out
        rare spikes (a flush of the records, the other agent on the machine).
        """
        cpu = np.diff(self.cpu)[skip:]
        wall = np.diff(self.wall)[skip:]
        if len(cpu) == 0:
            raise ValueError(f"--steps must be larger than the {skip} warm-up steps left out of the steady state")
        return float(np.median(cpu)), float(np.median(wall))


@dataclass
class Measure:
    """One timed call: its whole cost and its steady per-step cost, in seconds per sample."""

    call_cpu: float
    call_wall: float
    steady_cpu: float
    steady_wall: float


@dataclass
class Results:
    """Measures by variant, one per round, and their ratios to a baseline."""

    order: list[str] = field(default_factory=list)
    runs: dict[str, list[Measure]] = field(default_factory=dict)
    baseline: dict[str, str] = field(default_factory=dict)  # variant -> its baseline variant
    steps: int = 0  # steps per timed call

    def add(self, name: str, measure: Measure) -> None:
        if name not in self.runs:
            self.order.append(name)
            self.runs[name] = []
        self.runs[name].append(measure)

    def ratios(self, name: str, metric: str) -> list[float]:
        """Per-round throughput ratios baseline/variant of one metric."""
        base = self.runs[self.baseline.get(name, name)]
        mine = self.runs[name]
        return [getattr(b, metric) / getattr(m, metric) for b, m in zip(base, mine, strict=False)]

    def median_ratio(self, name: str, metric: str) -> float:
        return statistics.median(self.ratios(name, metric))

    def fixed_steps(self, name: str) -> float:
        """The call's cost beyond ``steps`` steady steps, in steady steps of the baseline; median over rounds.

        That is the per-call price of tracing and set-up (and end-of-call
        work), in units of plain steps, so it does not depend on --steps.
        """
        base = self.runs[self.baseline.get(name, name)]
        values = []
        for b, m in zip(base, self.runs[name], strict=False):
            fixed = (m.call_cpu - m.steady_cpu) * BATCH * self.steps  # seconds of CPU beyond the steady steps
            values.append(fixed / (b.steady_cpu * BATCH))
        return statistics.median(values)


def timed(run: Callable[[StepClock], None], samples: int, skip: int) -> Measure:
    """Times ``run(clock)`` as a whole and per step; garbage is collected before, untimed."""
    gc.collect()
    clock = StepClock()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run(clock)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    steady_cpu, steady_wall = clock.steady(skip)
    return Measure(cpu / samples, wall / samples, steady_cpu / BATCH, steady_wall / BATCH)


def table(results: Results, labels: dict[str, str]) -> str:
    """The ratio table: one line per variant, medians over rounds."""
    head = (
        f"{'variant':<36} {'call CPU':>9} {'(min-max)':>12} {'steady CPU':>11} {'(min-max)':>12}"
        f" {'call wall':>10} {'steady wall':>12} {'fixed/call':>11}"
    )
    lines = [head, "-" * len(head)]
    for name in results.order:
        call = results.ratios(name, "call_cpu")
        steady = results.ratios(name, "steady_cpu")
        lines.append(
            f"{labels.get(name, name):<36} {statistics.median(call):>8.3f}x {_span(call):>12}"
            f" {statistics.median(steady):>10.3f}x {_span(steady):>12}"
            f" {results.median_ratio(name, 'call_wall'):>9.3f}x {results.median_ratio(name, 'steady_wall'):>11.3f}x"
            f" {results.fixed_steps(name):>11.1f}"
        )
    return "\n".join(lines)


def absolute(results: Results, labels: dict[str, str]) -> str:
    """Median absolute CPU ms per step, for context only (they swing with the machine)."""
    parts = []
    for name in results.order:
        runs = results.runs[name]
        call = statistics.median(m.call_cpu for m in runs) * BATCH * 1e3
        steady = statistics.median(m.steady_cpu for m in runs) * BATCH * 1e3
        parts.append(f"  {labels.get(name, name):<36} call {call:7.2f} ms/step   steady {steady:7.2f} ms/step")
    return "\n".join(parts)


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def legend(rounds: int, steps: int, skip: int) -> str:
    return (
        f"ratio = plain fit's cost per sample / the variant's, median of {rounds} interleaved rounds "
        f"(>1: faster than plain fit)\n"
        f"call   = one whole training call of {steps} steps of {BATCH} "
        f"(traces, set-up and end-of-epoch work included)\n"
        f"steady = median per-step time inside that call, steps {skip + 1}..{steps} (no trace, no set-up)\n"
        f"fixed/call = CPU of the call beyond {steps} steady steps, in steady steps of plain fit (trace, set-up)\n"
        f"CPU = time.process_time() (all threads); wall = time.perf_counter(), secondary (swings with load)"
    )
