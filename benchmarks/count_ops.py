"""How many graph ops GradientMonitor adds to a traced training step: per watched layer, and per step.

On a GPU without XLA each small op is a kernel launch of a few microseconds,
so this count is what recording costs there; on a CPU, and under XLA, the
ops fuse or run inline and their count matters less than the passes over
the parameters (see docs/performance.md).

The step is ``model.train_step`` traced in a `tf.function`, as ``fit`` traces
it, on tanh MLPs of two depths (Dense layers of 64); ops are counted in the
step's graph and in every function it calls (cond branches included). The
difference between the depths gives the ops per layer; the rest is per step.
Each count is given twice: all graph ops, and only the ops that launch a
kernel on a GPU (constants, identities and the function's inputs do not).

    python benchmarks/count_ops.py
"""

from __future__ import annotations

import argparse
import sys

import keras
import numpy as np
import tensorflow as tf

from gradscope import GradientMonitor
from gradscope.models import lecture_mlp

# Ops that launch no kernel on a GPU: constants (folded before the step
# runs), identities and no-ops (aliases), the function's inputs.
NO_KERNEL = frozenset({"Const", "Identity", "IdentityN", "NoOp", "Placeholder"})


def count_ops(layers: int, options: dict | None, kernels_only: bool = False) -> int:
    """Ops in the traced train step of a ``layers``-deep MLP; ``options`` None: no monitor.
    With ``kernels_only``, the ops in `NO_KERNEL` are not counted."""
    model = lecture_mlp(input_dim=32, hidden=(64,) * (layers - 1), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x, y = tf.constant(np.ones((8, 32), np.float32)), tf.constant(np.ones((8, 10), np.float32))
    model.fit(x, y, verbose=0)  # builds the optimizer, as fit does before the monitor hooks
    if options is not None:
        monitor = GradientMonitor(**options)
        monitor.set_model(model)
        monitor.set_params({"verbose": 0, "epochs": 1, "steps": 1})
        monitor.on_train_begin()
    graph = tf.function(lambda: model.train_step((x, y))).get_concrete_function().graph.as_graph_def()
    if options is not None:
        monitor.detach()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return sum(1 for n in nodes if not (kernels_only and n.op in NO_KERNEL))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs=2, default=[10, 20], help="two MLP depths (default 10 20)")
    args = parser.parse_args(argv)
    shallow, deep = args.depths
    configs = {
        "GradientMonitor() (defaults)": {},
        "weights_every=10": {"weights_every": 10},
        "weights_every=10, activation_stats=False": {"weights_every": 10, "activation_stats": False},
    }
    summary = []
    for kernels_only in (False, True):
        kind = "ops that launch a kernel" if kernels_only else "graph ops"
        plain = {d: count_ops(d, None, kernels_only) for d in (shallow, deep)}
        print(f"\n{kind}: tanh MLPs of {shallow} and {deep} Dense layers; plain train step: {plain[shallow]} and "
              f"{plain[deep]} ({(plain[deep] - plain[shallow]) / (deep - shallow):.1f} per layer)")
        print(f"{'configuration':<44} {'per layer':>10} {'per step':>9}")
        for label, options in configs.items():
            added = {d: count_ops(d, options, kernels_only) - plain[d] for d in (shallow, deep)}
            per_layer = (added[deep] - added[shallow]) / (deep - shallow)
            per_step = added[shallow] - per_layer * shallow
            print(f"{label:<44} {per_layer:>10.1f} {per_step:>9.0f}")
            summary.append(f"{label} ({kind}): {per_layer:.1f}/layer + {per_step:.0f}/step")
    print("\nOPS " + "; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
