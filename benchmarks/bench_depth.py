"""What GradientMonitor costs against depth: deep tanh MLPs and a ResNet-style CNN, with and without XLA.

For each network, plain ``fit`` and ``fit`` with ``GradientMonitor()`` (its
defaults: everything, every step) run interleaved round by round in one
process, each on its own model; the figure is CPU time per sample, median
over rounds, as a ratio of throughput to plain ``fit`` of the same network
and the same XLA setting (above 1 is faster). The MLPs have 10, 25, 50 and
100 Dense layers of 128 units (tanh, Glorot), on MNIST-shaped data; the CNN
has conv, batch-norm and ReLU blocks with skip connections (21 weighted
layers) on 32x32x3 inputs.

    python benchmarks/bench_depth.py                     # about 15 minutes
    python benchmarks/bench_depth.py --rounds 2 --steps 10 --depths 10 25   # a smoke test
    python benchmarks/bench_depth.py --plot docs/depth_cost.png

The last line (``RATIOS ...``) gives each figure beside the target: the
50-layer MLP >= 0.90x without XLA and >= 0.95x with it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from _bench import BATCH, Results, StepClock, mnist_like, parse, timed

from gradscope import GradientMonitor
from gradscope.models import lecture_mlp


def mlp(layers: int, jit: bool) -> keras.Model:
    model = lecture_mlp(hidden=(128,) * (layers - 1), init="glorot_uniform", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", jit_compile=jit)
    return model


def resnet(jit: bool, blocks: int = 6) -> keras.Model:
    """Conv-BN-ReLU stem, ``blocks`` residual blocks of two conv-BN(-ReLU) each, a dense head."""
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    for b in range(blocks):
        stride = 2 if b in (2, 4) else 1
        width = 16 * 2 ** (b // 2)
        skip = h
        r = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(h)
        r = keras.layers.ReLU()(keras.layers.BatchNormalization()(r))
        r = keras.layers.BatchNormalization()(keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(r))
        if stride != 1 or skip.shape[-1] != width:
            skip = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False)(skip)
        h = keras.layers.ReLU()(keras.layers.Add()([r, skip]))
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out, name="resnet_style")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", jit_compile=jit)
    return model


def weighted_layers(model: keras.Model) -> int:
    return sum(1 for layer in model.layers if layer.trainable_weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 25, 50, 100], help="MLP depths (Dense layers)")
    parser.add_argument("--no-resnet", action="store_true", help="leave the CNN out")
    parser.add_argument("--plot", metavar="PNG", default=None, help="draw the ratio against depth into this file")
    args = parse(parser, argv)
    samples = BATCH * args.steps
    x, y = mnist_like(samples, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    images = rng.random((samples, 32, 32, 3), dtype=np.float32)

    nets: dict[str, tuple[Callable[[bool], keras.Model], np.ndarray, np.ndarray]] = {
        f"mlp{d}": ((lambda jit, d=d: mlp(d, jit)), x, y) for d in args.depths
    }
    if not args.no_resnet:
        nets["resnet"] = (resnet, images, y)
    variants: dict[str, Callable[[StepClock], object]] = {}
    baseline: dict[str, str] = {}
    layers: dict[str, int] = {}
    for net, (make, xs, ys) in nets.items():
        for jit in (False, True):
            tag = f"{net}{'_xla' if jit else ''}"
            plain, watched = make(jit), make(jit)
            monitor = GradientMonitor()
            layers[net] = weighted_layers(plain)
            variants[tag] = (lambda clock, m=plain, xs=xs, ys=ys:
                             m.fit(xs, ys, batch_size=BATCH, epochs=1, verbose=0, callbacks=[clock]))
            variants[tag + "+monitor"] = (lambda clock, m=watched, xs=xs, ys=ys, mon=monitor:
                                          m.fit(xs, ys, batch_size=BATCH, epochs=1, verbose=0, callbacks=[mon, clock]))
            baseline[tag] = tag
            baseline[tag + "+monitor"] = tag

    print(f"bench_depth: {', '.join(f'{n} ({layers[n]} weighted layers)' for n in nets)}; batch {BATCH}; "
          f"{args.rounds} rounds x {args.steps} steps; TF {tf.__version__}, Keras {keras.__version__}", flush=True)
    for run in variants.values():  # warm-up: trace and compile once, untimed
        run(StepClock())
    results = Results(baseline=baseline, steps=args.steps)
    for r in range(args.rounds):
        for name, run in variants.items():
            results.add(name, timed(run, samples, args.skip))
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"\n{'network':<10} {'weighted layers':>16} {'no XLA: steady':>15} {'call':>7} "
          f"{'XLA: steady':>12} {'call':>7}")
    rows = {}
    for net in nets:
        plain = [results.median_ratio(f"{net}+monitor", k) for k in ("steady_cpu", "call_cpu")]
        xla = [results.median_ratio(f"{net}_xla+monitor", k) for k in ("steady_cpu", "call_cpu")]
        rows[net] = (plain, xla)
        print(f"{net:<10} {layers[net]:>16} {plain[0]:>14.3f}x {plain[1]:>6.3f}x {xla[0]:>11.3f}x {xla[1]:>6.3f}x")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        mlps = [n for n in nets if n.startswith("mlp")]
        for k, label in ((0, "no XLA"), (1, "XLA")):
            ax.plot([layers[n] for n in mlps], [rows[n][k][0] for n in mlps], marker="o", label=f"MLP, {label}")
            if "resnet" in rows:
                ax.scatter([layers["resnet"]], [rows["resnet"][k][0]], marker="s", label=f"ResNet-style CNN, {label}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("weighted layers")
        ax.set_ylabel("throughput vs plain fit (steady, CPU)")
        ax.set_title("GradientMonitor() cost against depth")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot: {args.plot}")

    def verdict(value: float, target: float) -> str:
        return f"{value:.3f}x [>= {target:.2f}x {'met' if value >= target else 'not met'}]"

    final = "RATIOS bench_depth (steady CPU throughput vs plain fit of the same network, median of "
    final += f"{args.rounds}): "
    parts = []
    for net, (plain, xla) in rows.items():
        if net == "mlp50":
            parts.append(f"mlp50 no XLA {verdict(plain[0], 0.90)}, XLA {verdict(xla[0], 0.95)}")
        else:
            parts.append(f"{net} no XLA {plain[0]:.3f}x, XLA {xla[0]:.3f}x")
    print("\n" + final + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
