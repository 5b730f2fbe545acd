"""The lecture's deep MLP on MNIST, with gradscope watching the gradients.

The same script as ``lecture_mlp.py`` (which it imports the data loading and
the network from); the only change to the training is one callback:
``fit(..., callbacks=[GradientMonitor()])``. After training it prints the
per-layer summary with its verdict and saves the run to
``runs/lecture-monitored`` (see it again with ``gradscope report runs/lecture-monitored``).

    python examples/lecture_mlp_monitored.py --epochs 1 --data /work/shared/data/mnist
"""

from __future__ import annotations

import sys
from pathlib import Path

from keras.optimizers import Adam

sys.path.insert(0, str(Path(__file__).resolve().parent))  # find lecture_mlp.py from any working directory
from lecture_mlp import build_model, load_mnist, parse_args  # noqa: E402

from gradscope import GradientMonitor  # noqa: E402


def main() -> None:
    args = parse_args()
    x_train, y_train, x_test, y_test = load_mnist(args.data)

    mlp = build_model(x_train.shape[1], args.activation)
    mlp.compile(loss="mean_squared_error", optimizer=Adam(learning_rate=0.001), metrics=["accuracy"])
    mlp.fit(x_train, y_train, batch_size=128, epochs=args.epochs,
            validation_data=(x_test, y_test), verbose=2, callbacks=[monitor := GradientMonitor()])

    res = mlp.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {res[1] * 100:.2f}%")
    monitor.summary()
    monitor.save("runs/lecture-monitored")


if __name__ == "__main__":
    main()
