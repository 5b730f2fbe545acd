"""tanh + random_uniform against ReLU + He: the lecture's remedy for vanishing gradients, measured.

Trains the lecture's network twice, with the same seed, the same data in the
same order and the same number of steps; only the hidden layers differ:

* ``tanh``: tanh hidden layers, ``random_uniform`` weights (the lecture's net);
* ``relu``: ReLU hidden layers, ``he_normal`` weights.

Both keep the tanh output layer, the MSE loss and Adam(0.001). A
GradientMonitor watches each run. Printed: the diagnosis' one-line shrink
sentence, the final training accuracy, and the back-propagated gradient of
every layer relative to the output layer's, at the last step. The plot goes
to ``runs/tanh_vs_relu.png``.

    python examples/tanh_vs_relu.py --data /work/shared/data/mnist
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
from keras.optimizers import Adam

sys.path.insert(0, str(Path(__file__).resolve().parent))  # find lecture_mlp.py from any working directory
from lecture_mlp import build_model, load_mnist  # noqa: E402

from gradscope import GradientMonitor, diagnose  # noqa: E402
from gradscope.render.plots import plot_comparison  # noqa: E402

RUNS = {"tanh": ("tanh", "random_uniform"), "relu": ("relu", "he_normal")}
SEED = 0


def train(x, y, activation: str, init: str, epochs: int):
    """One run of the lecture's recipe; returns the monitor's GradientHistory."""
    keras.utils.set_random_seed(SEED)  # same initial draws for both runs
    mlp = build_model(x.shape[1], activation, init, n_output=y.shape[1])
    mlp.compile(loss="mean_squared_error", optimizer=Adam(learning_rate=0.001), metrics=["accuracy"])
    monitor = GradientMonitor()
    # shuffle=False on data shuffled once below: both runs see the very same batches.
    mlp.fit(x, y, batch_size=128, epochs=epochs, shuffle=False, verbose=2, callbacks=[monitor])
    return monitor.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs for each run (default 2)")
    parser.add_argument("--data", metavar="PATH", help="folder of MNIST IDX files, or an .npz")
    args = parser.parse_args()

    x_train, y_train, _, _ = load_mnist(args.data)
    order = np.random.default_rng(SEED).permutation(len(x_train))
    x_train, y_train = x_train[order], y_train[order]

    histories = {}
    for label, (activation, init) in RUNS.items():
        print(f"\n== {label}: {activation} hidden layers, {init} weights ==")
        histories[label] = train(x_train, y_train, activation, init, args.epochs)

    print()
    for label, history in histories.items():
        d = diagnose(history)
        rules = ", ".join(f.rule for f in d.findings) or "none"
        print(f"{d.shrink_sentence(label)}; training accuracy {d.final_accuracy:.1%} "
              f"(last tenth of the steps); rules fired: {rules}")

    # d(loss)/d(layer output), RMS, at the last step, divided by the output layer's.
    print("\nback-propagated gradient relative to the output layer (last step)")
    print(f"{'layer':<18}" + "".join(f"{label:>10}" for label in histories))
    ratios = {label: h["backprop"][-1] / h["backprop"][-1, -1] for label, h in histories.items()}
    layers = next(iter(histories.values())).layers
    for li, name in enumerate(layers):
        print(f"{name:<18}" + "".join(f"{ratios[label][li]:>10.3g}" for label in histories))
    # Both runs keep the lecture's random_uniform output kernel, which alone scales the
    # gradient down on its way to the last hidden layer; this row leaves it out.
    print(f"{layers[0] + ' / ' + layers[-2]:<18}" + "".join(f"{r[0] / r[-2]:>10.3g}" for r in ratios.values()))

    path = plot_comparison(histories, "runs/tanh_vs_relu.png")
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
