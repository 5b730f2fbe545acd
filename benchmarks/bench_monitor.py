"""The cost of `GradientMonitor(every=1)` in ``model.fit``.

What it measures: the training throughput of ``model.fit`` with a
`GradientMonitor(every=1)` among its callbacks, relative to the same
``model.fit`` without it, on

  * the lecture's network (`gradscope.models.lecture_mlp`:
    784-1024-512-512-512-10, tanh everywhere, random_uniform init), and
  * a deep narrow MLP (``--deep-layers`` Dense layers in all, default 50:
    49 hidden of width 128 plus the output of 10, tanh everywhere,
    glorot_uniform init so 50 tanh layers stay numerically sane; the init
    does not change the cost), to show how the cost grows with the number
    of watched layers,

plus, as an anchor, the lecture network with Keras'
``TensorBoard(log_dir=<tmp>, histogram_freq=1)`` instead of the monitor
(``--no-tensorboard`` drops it; it is skipped with a note if it fails).
All with MSE, Adam(1e-3), batch 128, synthetic MNIST-shaped data (x uniform
in [0, 1], (N, 784) float32; y one-hot, 10 classes).

Three configurations of the monitor on the lecture network, each with its
own model:

  defaults      ``GradientMonitor()``: every series every step (activation
                statistics, weight norms and update ratios included).
                Target (activation statistics on): >= 0.95x.
  w10           ``GradientMonitor(weights_every=10)``: the weight norms and
                update ratios on every 10th step (each is a pass over all
                1.86M parameters), everything else every step.
  lean          ``GradientMonitor(weights_every=10, activation_stats=False)``:
                the gradients and the back-propagated gradients every step,
                as the GradientMonitor issue asks. Target: >= 0.98x.

Design, and why:

* Every variant has its own model, built and compiled once; every round
  calls ``fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=True)`` on
  each again, on N = 128 * --steps samples. One `GradientMonitor` and one
  `TensorBoard` instance serve all rounds, as in a user's repeated ``fit``.
* One untimed warm-up call per variant (tracing), then the variants run in
  one process interleaved round by round (fit, monitor, tensorboard,
  fit-deep, monitor-deep, fit, ...); garbage is collected before each call,
  untimed. CPU time (``time.process_time()``, all threads) is the figure;
  wall time is secondary (+-40% swings on this shared 2-core machine).
* A monitor installs its hooks in ``on_train_begin`` and swaps in a train
  function traced with them: the first time a fresh one (traced during the
  warm-up call), later the one it kept from its previous ``fit``. In
  ``on_train_end`` it gives the model back its plain function. Two figures
  separate the per-call price from the per-step price:

  call    CPU of the whole ``fit`` call: hook set-up, the end-of-epoch
          flush of the records, all included. It depends on --steps.
  steady  the median per-step CPU time inside the same call, leaving out
          its first --skip steps (the retrace lands in step 1), read by a
          small callback placed last in the list that reads the clocks
          after every batch. This is the cost of the monitored step itself
          in one long fit with the monitor in place, independent of
          --steps.

  ``fixed/call`` turns the difference into "the call costs as much as K
  more plain steps", which does not depend on --steps either.

Ratios are plain fit's cost per sample / the variant's (>1: faster),
computed per round against the same round's plain fit of the same network,
then the median over rounds.

Command (about 3.5 minutes with the defaults, on this machine):

    python benchmarks/bench_monitor.py                   # --rounds 7 --steps 100
    python benchmarks/bench_monitor.py --rounds 2 --steps 20   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import tensorflow as tf
from _bench import BATCH, Results, StepClock, absolute, legend, mnist_like, parse, table, timed

from gradscope import GradientMonitor
from gradscope.models import lecture_mlp

JIT = False  # set by --jit: every model's step compiled with XLA, plain fit included


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse", jit_compile=JIT)
    return model


def deep_mlp(layers: int, width: int, seed: int) -> keras.Model:
    """``layers`` Dense layers in all: ``layers - 1`` hidden of ``width``, and the output of 10; tanh."""
    model = lecture_mlp(hidden=(width,) * (layers - 1), init="glorot_uniform", seed=seed)
    return compiled(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include the TensorBoard(histogram_freq=1) anchor (default on)",
    )
    parser.add_argument("--deep-layers", type=int, default=50,
                        help="Dense layers of the deep MLP; 0 drops it (default 50)")
    parser.add_argument("--deep-width", type=int, default=128,
                        help="width of the deep MLP's hidden layers (default 128)")
    parser.add_argument("--jit", action="store_true",
                        help="compile every step with XLA (fit(jit_compile=True)), as Keras does on a GPU")
    args = parse(parser, argv)
    global JIT
    JIT = args.jit

    samples = BATCH * args.steps
    x, y = mnist_like(samples, seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="gradscope-bench-tb-")

    def fit_with(model: keras.Model, extra: list) -> Callable[[StepClock], object]:
        return lambda clock: model.fit(
            x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True, callbacks=[*extra, clock]
        )

    # The monitor's configurations: its defaults (everything every step), the
    # weight and update norms on every 10th step, and that without the
    # activation statistics (gradients and back-propagated gradients only).
    configs = {
        "monitor": ({}, "+ GradientMonitor() (defaults)"),
        "monitor_w10": ({"weights_every": 10}, "+ GradientMonitor(weights_every=10)"),
        "monitor_lean": ({"weights_every": 10, "activation_stats": False},
                         "+ GradientMonitor(weights_every=10, activation_stats=False)"),
    }
    lecture = {name: compiled(lecture_mlp(seed=args.seed)) for name in ("fit", "tensorboard", *configs)}
    variants = {"fit": fit_with(lecture["fit"], [])}
    baseline = {"fit": "fit"}
    labels = {"fit": "lecture: plain fit (baseline)", "tensorboard": "lecture: + TensorBoard(histogram=1)"}
    for name, (options, label) in configs.items():
        variants[name] = fit_with(lecture[name], [GradientMonitor(every=1, **options)])
        baseline[name] = "fit"
        labels[name] = f"lecture: {label}"
    if args.tensorboard:
        board = keras.callbacks.TensorBoard(log_dir=tmp.name, histogram_freq=1)
        variants["tensorboard"] = fit_with(lecture["tensorboard"], [board])
        baseline["tensorboard"] = "fit"
    if args.deep_layers > 1:
        deep_monitor = GradientMonitor(every=1)
        variants["fit_deep"] = fit_with(deep_mlp(args.deep_layers, args.deep_width, args.seed), [])
        variants["monitor_deep"] = fit_with(deep_mlp(args.deep_layers, args.deep_width, args.seed), [deep_monitor])
        baseline.update(fit_deep="fit_deep", monitor_deep="fit_deep")
        labels["fit_deep"] = f"{args.deep_layers}-layer: plain fit (baseline)"
        labels["monitor_deep"] = f"{args.deep_layers}-layer: + GradientMonitor"

    print(
        "bench_monitor: lecture_mlp 784-1024-512-512-512-10 tanh"
        + (f" and a {args.deep_layers}-layer x {args.deep_width} tanh MLP" if args.deep_layers > 1 else "")
        + f"; MSE, Adam 1e-3, batch {BATCH}; {args.rounds} rounds x {args.steps} steps per fit call; "
        f"TF {tf.__version__}, Keras {keras.__version__}" + ("; XLA (jit_compile=True)" if args.jit else ""),
        flush=True,
    )
    for name in list(variants):  # warm-up: trace once, untimed
        t0 = time.perf_counter()
        try:
            variants[name](StepClock())
        except Exception as exc:  # only the optional anchor may fail softly
            if name != "tensorboard":
                raise
            print(f"  TensorBoard anchor skipped: {type(exc).__name__}: {exc}", flush=True)
            del variants[name]
            continue
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f}s wall", file=sys.stderr, flush=True)

    results = Results(baseline=baseline, steps=args.steps)
    for r in range(args.rounds):
        for name, run in variants.items():
            results.add(name, timed(run, samples, args.skip))
        print(
            f"  round {r + 1}/{args.rounds}: "
            + ", ".join(
                f"{n} call {results.ratios(n, 'call_cpu')[-1]:.3f}x steady {results.ratios(n, 'steady_cpu')[-1]:.3f}x"
                for n in variants
                if baseline[n] != n
            ),
            file=sys.stderr,
            flush=True,
        )
    tmp.cleanup()

    print()
    print(table(results, labels))
    print()
    print(legend(args.rounds, args.steps, args.skip).replace("plain fit's", "plain fit's (same network)"))
    print("absolute CPU per step, medians (context only; they swing with the machine):")
    print(absolute(results, labels))

    def verdict(value: float, target: float) -> str:
        return f">= {target:.2f}x {'PASS' if value >= target else 'FAIL'}"

    def ratios(name: str) -> str:
        return (f"call {results.median_ratio(name, 'call_cpu'):.3f}x "
                f"steady {results.median_ratio(name, 'steady_cpu'):.3f}x")

    # Targets: everything on (activation statistics included) >= 0.95x; the
    # monitor as the GradientMonitor issue states it (gradients and
    # back-propagated gradients every step) >= 0.98x.
    # The same targets with and without XLA (against the plain fit of the same kind).
    final = (
        f"RATIOS bench_monitor{' --jit' if args.jit else ''} "
        f"(CPU throughput vs plain fit{'(jit_compile=True)' if args.jit else ''}, median of {args.rounds}): "
        f"lecture monitor defaults {ratios('monitor')} "
        f"[stats-on {verdict(results.median_ratio('monitor', 'steady_cpu'), 0.95)} steady]; "
        f"weights_every=10 {ratios('monitor_w10')} "
        f"[stats-on {verdict(results.median_ratio('monitor_w10', 'steady_cpu'), 0.95)} steady]; "
        f"lean {ratios('monitor_lean')} "
        f"[{verdict(results.median_ratio('monitor_lean', 'steady_cpu'), 0.98)} steady]"
    )
    if "tensorboard" in variants:
        final += (
            f"; tensorboard call {results.median_ratio('tensorboard', 'call_cpu'):.3f}x"
            f" steady {results.median_ratio('tensorboard', 'steady_cpu'):.3f}x"
        )
    if "monitor_deep" in variants:
        final += (
            f"; {args.deep_layers}-layer monitor call {results.median_ratio('monitor_deep', 'call_cpu'):.3f}x"
            f" steady {results.median_ratio('monitor_deep', 'steady_cpu'):.3f}x"
        )
    print()
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
