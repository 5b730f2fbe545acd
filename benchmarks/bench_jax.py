"""`GradientMonitor` under Keras' JAX backend, and the step time of each backend.

Two measurements, both on the lecture's network (784-1024-512-512-512-10,
tanh, random_uniform init, MSE, Adam 1e-3), batch 128, synthetic
MNIST-shaped data:

``--mode monitor`` (the default; runs under JAX in this process)
    plain ``fit`` against ``fit`` with ``GradientMonitor()`` (every series,
    every step) and with the lean monitor (``weights_every=10,
    activation_stats=False``). Each variant has its own model, compiled and
    warmed once; every round calls ``fit`` for one epoch of ``--steps``
    steps on each, in a new random order, and the ratio is plain CPU time
    per sample over the variant's, median over rounds (above 1: faster).
    ``--ablate`` adds the floor (hooks, probes and row, no statistic) and
    the gradient norms alone.

``--mode backends``
    plain ``fit`` per step on TensorFlow, TensorFlow with
    ``jit_compile=True``, and JAX. Keras picks its backend once per process,
    so each round starts one process per backend, in a new random order;
    each process warms up, then times ``--epochs`` epochs. The figures are
    medians over rounds of each process's median epoch: wall milliseconds
    per step, and CPU milliseconds per step (all threads).

    python benchmarks/bench_jax.py --rounds 15 --ablate
    python benchmarks/bench_jax.py --mode backends --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

BATCH = 128


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["monitor", "backends", "worker"], default="monitor")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument("--steps", type=int, default=60, help="steps of 128 per fit call (default 60)")
    parser.add_argument("--epochs", type=int, default=5, help="--mode backends: timed epochs per process (default 5)")
    parser.add_argument("--ablate", action="store_true",
                        help="--mode monitor: also the floor (no statistic) and the gradient norms alone")
    parser.add_argument("--backend", default="jax", help=argparse.SUPPRESS)  # --mode worker
    args = parser.parse_args(argv)
    if args.mode == "backends":
        backends(args)
    else:
        os.environ["KERAS_BACKEND"] = "jax" if args.mode == "monitor" else args.backend.split("+")[0]
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        (monitor if args.mode == "monitor" else worker)(args)


def _lecture_model(jit: bool = True):
    import keras

    from gradscope.models import lecture_mlp

    model = lecture_mlp(activation="tanh", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=jit)
    return model


def _synced(model) -> None:
    """Waits for the device: JAX dispatches asynchronously, and the CPU time
    of a step still running must not fall into the next measurement."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready([v.value for v in model.trainable_variables])


def monitor(args: argparse.Namespace) -> None:
    from _bench import interleaved_cpu_times, mnist_like  # imports Keras: after KERAS_BACKEND is set

    from gradscope import GradientMonitor

    x, y = mnist_like(args.steps * BATCH)
    variants = {
        "plain fit": None,
        "GradientMonitor()": GradientMonitor(),
        "weights_every=10": GradientMonitor(weights_every=10),
        "lean": GradientMonitor(weights_every=10, activation_stats=False),
        "every=4": GradientMonitor(every=4),
    }
    if args.ablate:
        variants["floor"] = GradientMonitor(activation_stats=False)
        variants["gradient norms only"] = GradientMonitor(activation_stats=False)
    models = {name: _lecture_model() for name in variants}
    if args.ablate:
        _ablate(variants, models, x, y)

    def call(name):
        callbacks = [variants[name]] if variants[name] is not None else []
        models[name].fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=True, callbacks=callbacks)
        _synced(models[name])

    for name in variants:  # compile and warm every variant once, untimed
        call(name)
    per_call = interleaved_cpu_times({name: lambda name=name: call(name) for name in variants}, args.rounds, 1)
    cpu = {name: [t / len(x) for t in times] for name, times in per_call.items()}
    print(f"JAX backend, lecture network, batch {BATCH}, {args.steps} steps per call, {args.rounds} rounds")
    print(f"{'variant':20} {'CPU us/sample':>14} {'ratio to plain':>15}")
    for name in variants:
        ratios = [p / v for p, v in zip(cpu["plain fit"], cpu[name], strict=True)]
        print(f"{name:20} {statistics.median(cpu[name]) * 1e6:14.1f} {statistics.median(ratios):14.3f}x")


def _ablate(variants, models, x, y) -> None:
    """The floor (the hooks, the probes and the row's plumbing, with no
    statistic: XLA drops what nothing reads) and the gradient norms alone,
    by steps whose row computes only that."""
    import jax.numpy as jnp

    from gradscope.jax_step import RecordedSteps

    class Floor(RecordedSteps):
        def row(self, t, weigh):
            r = self.hooks.recorder
            return jnp.zeros((r.layout.width,)), jnp.zeros((r.layout.layers, r.probe.bins + 2))

    class GradientNorms(Floor):
        def row(self, t, weigh):
            zeros, hist = super().row(t, weigh)
            norms = jnp.stack([jnp.sum(jnp.square(t.grads[i])) for i in self.hooks.columns])
            return zeros.at[: len(norms)].set(norms), hist

    for name, kind in (("floor", Floor), ("gradient norms only", GradientNorms)):
        monitor, model = variants[name], models[name]
        model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
        recorder = monitor.session.recorder
        steps = recorder.steps  # the next fit keeps its replacement: same model, optimizer and train function
        recorder.steps = kind(steps.hooks, steps.plain_train)


def worker(args: argparse.Namespace) -> None:
    """One backend's plain fit: prints [wall ms per step, CPU ms per step], medians over epochs."""
    from _bench import mnist_like

    jit = args.backend.endswith("+jit") or args.backend == "jax"  # Keras compiles JAX's step with XLA anyway
    x, y = mnist_like(args.steps * BATCH)
    model = _lecture_model(jit=jit)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # compile, warm up
    _synced(model)
    wall, cpu = [], []
    for _ in range(args.epochs):
        w0, c0 = time.perf_counter(), time.process_time()
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        _synced(model)
        wall.append((time.perf_counter() - w0) * 1e3 / args.steps)
        cpu.append((time.process_time() - c0) * 1e3 / args.steps)
    print(json.dumps([statistics.median(wall), statistics.median(cpu)]))


def backends(args: argparse.Namespace) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    names = ["tensorflow", "tensorflow+jit", "jax"]
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = list(names)
        random.Random(r).shuffle(order)
        for name in order:
            env = {**os.environ, "KERAS_BACKEND": name.split("+")[0], "TF_CPP_MIN_LOG_LEVEL": "3"}
            out = subprocess.run([sys.executable, os.path.join(here, "bench_jax.py"), "--mode", "worker",
                                  "--backend", name, "--steps", str(args.steps), "--epochs", str(args.epochs)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            results[name].append(tuple(json.loads(out.strip().splitlines()[-1])))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"plain fit, lecture network, batch {BATCH}, {args.steps} steps per epoch, median of {args.epochs} epochs "
          f"per process, median over {args.rounds} rounds")
    print(f"{'backend':18} {'wall ms/step':>13} {'CPU ms/step':>12} {'wall vs TF':>11}")
    tf_wall = statistics.median(w for w, _ in results["tensorflow"])
    for name in names:
        wall = statistics.median(w for w, _ in results[name])
        cpu = statistics.median(c for _, c in results[name])
        print(f"{name:18} {wall:13.1f} {cpu:12.1f} {tf_wall / wall:10.2f}x")


if __name__ == "__main__":
    main()
