"""gradscope's own training loop against plain Keras ``model.fit``.

What it measures: the training throughput of `gradscope.train` (which
always records every step's per-layer gradient statistics) relative to
plain ``model.fit`` (which records nothing), on the lecture's network
(`gradscope.models.lecture_mlp`: 784-1024-512-512-512-10, tanh everywhere,
random_uniform init), MSE, Adam(1e-3), batch 128, on synthetic MNIST-shaped
data (x uniform in [0, 1], (N, 784) float32; y one-hot, 10 classes).

Variants, each on its own model, built and compiled once and trained
further in every round:

  fit        ``model.fit(x, y, batch_size=128, epochs=1, verbose=0, shuffle=True)``
  gradscope  ``gradscope.train(model, x, y, batch_size=128, epochs=1)``:
             everything recorded every step (activation statistics, weight
             norms and update ratios included), as ``gradscope run`` does
  core       the same with ``GradientMonitor(activation_stats=False)``: the
             core series (gradient, back-propagated
             gradient, weight and update norms, loss, accuracy), every step
  tape       (reference, ``--no-tape`` drops it and the next) a hand-written
             ``tf.function`` GradientTape step that also writes each layer's
             gradient norm into a device ring buffer; it is traced once.
  bare       the same hand-written step recording nothing: the floor of a
             per-step loop, before anything is recorded.

Each call trains --epochs epochs (default 1) of N = 128 * --steps samples. After one untimed
warm-up call per variant (tracing), the variants run in one process,
interleaved round by round (fit, gradscope, core, tape, bare, fit, ...), and each call is
timed with ``time.process_time()`` (CPU, all threads; the figure that
counts) and ``time.perf_counter()`` (wall, secondary: it swings +-40% on this
shared 2-core machine). Garbage is collected before each call, untimed.

Two figures per variant, both as throughput ratios to fit (fit's cost per
sample / the variant's, per round, median over rounds; > 1 is faster):

  call    the whole call, per-call set-up included. One `GradientMonitor`
          serves every `gradscope.train` call, so its traced step is reused
          (as fit reuses its train function) and no call traces again.
  steady  the median per-step time inside the call, leaving out the first
          --skip steps (the trace): the cost of the compiled, recording step
          itself, taken from a small callback reading the clocks after
          every batch (for the tape loop, the same clock read by hand).

Targets: the core record (``core``) >= 1.0x fit throughput; activation
statistics on (``gradscope``) >= 0.95x.

Command (about 2 minutes with the defaults, on this machine; 25 rounds take about 7):

    python benchmarks/bench_loop.py                  # --rounds 7 --steps 100
    python benchmarks/bench_loop.py --rounds 2 --steps 20   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from _bench import BATCH, Results, StepClock, absolute, legend, mnist_like, parse, table, timed

import gradscope
from gradscope.models import lecture_mlp


def compiled_lecture_mlp(seed: int) -> keras.Model:
    model = lecture_mlp(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse")
    return model


class TapeLoop:
    """A plain GradientTape loop with per-layer gradient norms kept on the device.

    The reference for what a hand-written recording loop costs: the step
    function is traced once and reused by every call; the norms go into a
    ring buffer fetched once per call. With ``norms=False`` it records
    nothing: the floor any loop starts from, before it records anything.
    """

    def __init__(self, model: keras.Model, capacity: int = 1024, norms: bool = True) -> None:
        self.model = model
        self.norms = norms
        self.optimizer = keras.optimizers.Adam(learning_rate=1e-3)
        self.variables = list(model.trainable_variables)
        ids = {id(v): i for i, v in enumerate(self.variables)}
        self.groups = [
            [ids[id(v)] for v in layer.trainable_variables] for layer in model.layers if layer.trainable_variables
        ]
        self.capacity = capacity
        self.ring = tf.Variable(tf.zeros((capacity, len(self.groups))), trainable=False)
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.step = tf.function(self._step, reduce_retracing=True)
        self.rng = np.random.default_rng(1)
        self.last_norms: np.ndarray | None = None

    def _step(self, xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            pred = self.model(xb, training=True)
            loss = tf.reduce_mean(tf.square(yb - pred))
        grads = tape.gradient(loss, self.variables)
        if not self.norms:
            self.optimizer.apply(grads, self.variables)
            return loss
        norms = tf.stack([tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(grads[i])) for i in g])) for g in self.groups])
        self.optimizer.apply(grads, self.variables)
        self.ring.scatter_nd_update([[self.count % self.capacity]], [norms])
        self.count.assign_add(1)
        return loss

    def fit_epoch(self, x: tf.Tensor, y: tf.Tensor, clock: StepClock) -> None:
        clock.on_train_begin()
        n = int(x.shape[0])
        order = self.rng.permutation(n)
        for start in range(0, n, BATCH):
            idx = tf.constant(order[start : start + BATCH])
            loss = self.step(tf.gather(x, idx), tf.gather(y, idx))
            float(loss)  # fit and gradscope.train turn their logs into floats every step too
            clock.on_train_batch_end(start // BATCH)
        self.last_norms = self.ring.numpy()[: min(int(self.count.numpy()), self.capacity)]
        self.count.assign(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-tape", action="store_true", help="leave out the two hand-written tape-loop references")
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs per call, for every variant (default 1; the repeated-call target is for 2)")
    args = parse(parser, argv)
    epochs = args.epochs

    samples = BATCH * args.steps
    x, y = mnist_like(samples, seed=args.seed)
    keras.utils.set_random_seed(args.seed)

    models = {name: compiled_lecture_mlp(args.seed) for name in ("fit", "gradscope", "core", "xla", "bare_call")}
    monitor = gradscope.GradientMonitor()
    core = gradscope.GradientMonitor(activation_stats=False)
    xla_monitor = gradscope.GradientMonitor()
    variants = {
        "fit": lambda clock: models["fit"].fit(
            x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True, callbacks=[clock]
        ),
        # One monitor for all rounds, as a user who trains on with the same
        # model would: its traced step is reused by later train() calls.
        "gradscope": lambda clock: gradscope.train(
            models["gradscope"], x, y, batch_size=BATCH, epochs=epochs, callbacks=[monitor, clock]
        ),
        "core": lambda clock: gradscope.train(
            models["core"], x, y, batch_size=BATCH, epochs=epochs, callbacks=[core, clock]
        ),
        # Everything recorded, the step compiled with XLA (against plain, non-XLA fit).
        "xla": lambda clock: gradscope.train(
            models["xla"], x, y, batch_size=BATCH, epochs=epochs, callbacks=[xla_monitor, clock],
            jit_compile=True
        ),
        # Called again and again with no monitor given: the step traced once must serve every call.
        "bare_call": lambda clock: gradscope.train(models["bare_call"], x, y, batch_size=BATCH, epochs=epochs,
                                                   callbacks=[clock]),
    }
    if not args.no_tape:
        tape = TapeLoop(lecture_mlp(seed=args.seed))
        xt, yt = tf.constant(x), tf.constant(y)
        variants["tape"] = lambda clock: [tape.fit_epoch(xt, yt, clock) for _ in range(epochs)]
        bare = TapeLoop(lecture_mlp(seed=args.seed), norms=False)
        variants["bare"] = lambda clock: [bare.fit_epoch(xt, yt, clock) for _ in range(epochs)]
    labels = {
        "fit": "model.fit (baseline)",
        "gradscope": "gradscope.train (records)",
        "core": "gradscope.train, no activation stats",
        "xla": "gradscope.train(jit_compile=True)",
        "bare_call": "gradscope.train, no monitor given",
        "tape": "tape loop + layer norms (ref)",
        "bare": "tape loop, records nothing (floor)",
    }

    print(
        f"bench_loop: lecture_mlp 784-1024-512-512-512-10 tanh, MSE, Adam 1e-3, batch {BATCH}; "
        f"{args.rounds} rounds x {args.steps} steps x {epochs} epochs per call; "
        f"TF {tf.__version__}, Keras {keras.__version__}",
        flush=True,
    )
    for name, run in variants.items():  # warm-up: trace once, untimed
        t0 = time.perf_counter()
        run(StepClock())
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f}s wall", file=sys.stderr, flush=True)

    results = Results(baseline={name: "fit" for name in variants}, steps=args.steps)
    for r in range(args.rounds):
        for name, run in variants.items():
            results.add(name, timed(run, samples * epochs, args.skip))
        fit_call = results.runs["fit"][-1].call_cpu
        print(
            f"  round {r + 1}/{args.rounds}: "
            + ", ".join(f"{n} {fit_call / results.runs[n][-1].call_cpu:.3f}x" for n in variants if n != "fit"),
            file=sys.stderr,
            flush=True,
        )

    print()
    print(table(results, labels))
    print()
    print(legend(args.rounds, args.steps, args.skip))
    print("absolute CPU per step, medians (context only; they swing with the machine):")
    print(absolute(results, labels))
    gs_call = results.median_ratio("gradscope", "call_cpu")
    gs_steady = results.median_ratio("gradscope", "steady_cpu")
    core_call = results.median_ratio("core", "call_cpu")
    core_steady = results.median_ratio("core", "steady_cpu")
    ok = lambda v, target: "PASS" if v >= target else "FAIL"  # noqa: E731
    final = (
        f"RATIOS bench_loop (CPU throughput vs model.fit, median of {args.rounds}): "
        f"gradscope.train call {gs_call:.3f}x steady {gs_steady:.3f}x"
        f"; without activation statistics call {core_call:.3f}x steady {core_steady:.3f}x"
    )
    if "tape" in variants:
        final += (
            f"; tape loop call {results.median_ratio('tape', 'call_cpu'):.3f}x"
            f" steady {results.median_ratio('tape', 'steady_cpu'):.3f}x"
            f"; bare tape loop call {results.median_ratio('bare', 'call_cpu'):.3f}x"
            f" steady {results.median_ratio('bare', 'steady_cpu'):.3f}x"
        )
    xla_steady = results.median_ratio("xla", "steady_cpu")
    bare_call = results.median_ratio("bare_call", "call_cpu")
    final += (
        f"; targets: core record >= 1.00x: call {ok(core_call, 1.0)}, steady {ok(core_steady, 1.0)}"
        f"; activation statistics on >= 0.95x: call {ok(gs_call, 0.95)}, steady {ok(gs_steady, 0.95)}"
        f"; jit_compile=True, everything recorded, {xla_steady:.3f}x steady "
        f"(call {results.median_ratio('xla', 'call_cpu'):.3f}x) >= 1.15x: {ok(xla_steady, 1.15)}"
        f"; no monitor given, per call {bare_call:.3f}x >= 0.98x: {ok(bare_call, 0.98)}"
    )
    print()
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
