"""The lecture's deep MLP on MNIST, as a plain Keras script (no gradscope in the training).

Network: 784-1024-512-512-512-10, tanh in every layer (the output too),
``random_uniform`` kernels, zero biases. Training: MSE on one-hot targets,
Adam with learning rate 0.001, batches of 128, 30 epochs, validated on the
test set. Then the test accuracy is printed.

    python examples/lecture_mlp.py                                  # 30 epochs, as in the lecture
    python examples/lecture_mlp.py --epochs 1 --data /work/shared/data/mnist

Without network access Keras cannot download MNIST; then the data comes from
``--data`` (a folder of MNIST IDX files or an .npz) or, failing that, from
gradscope's loader, which uses scikit-learn's 8x8 digits and says so.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from keras.layers import Dense
from keras.models import Sequential
from keras.optimizers import Adam


def load_mnist(path: str | None = None):
    """(x_train, y_train, x_test, y_test): flat pixels in [0, 1] and one-hot float32 labels."""
    if path is None:
        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
            x_train = x_train.reshape(len(x_train), 784).astype(np.float32) / 255.0
            x_test = x_test.reshape(len(x_test), 784).astype(np.float32) / 255.0
            y_train = keras.utils.to_categorical(y_train, 10)
            y_test = keras.utils.to_categorical(y_test, 10)
            return x_train, y_train, x_test, y_test
        except Exception as err:  # offline: Keras raises a bare Exception on a failed download
            reason = (str(err) or type(err).__name__).split(" -- ")[-1].splitlines()[0]
            print(f"keras.datasets.mnist.load_data() failed ({reason}); using gradscope.data instead")
    from gradscope.data import load_dataset

    ds = load_dataset("mnist", path)  # IDX folder / .npz, or Keras' cache, or sklearn digits
    for notice in ds.notices:
        print("notice:", notice)
    return ds.x_train, ds.one_hot(ds.y_train), ds.x_val, ds.one_hot(ds.y_val)


def build_model(n_input: int, activation: str = "tanh", init: str = "random_uniform",
                n_output: int = 10) -> Sequential:
    """The lecture's network; ``activation`` and ``init`` apply to the hidden layers only."""
    mlp = Sequential(name="lecture_mlp")
    mlp.add(keras.Input((n_input,)))
    for i, units in enumerate((1024, 512, 512, 512), 1):
        mlp.add(Dense(units, activation=activation, kernel_initializer=init,
                      bias_initializer="zeros", name=f"hidden_{i}"))
    mlp.add(Dense(n_output, activation="tanh", kernel_initializer="random_uniform",
                  bias_initializer="zeros", name="output"))
    return mlp


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The lecture's deep MLP on MNIST: 784-1024-512-512-512-10, "
                                     "tanh, random_uniform, MSE, Adam(0.001), batch 128.")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (the lecture: 30)")
    parser.add_argument("--data", metavar="PATH", help="folder of MNIST IDX files, or an .npz")
    parser.add_argument("--activation", default="tanh", help="hidden layers' activation (the output stays tanh)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    x_train, y_train, x_test, y_test = load_mnist(args.data)

    mlp = build_model(x_train.shape[1], args.activation)
    mlp.compile(loss="mean_squared_error", optimizer=Adam(learning_rate=0.001), metrics=["accuracy"])
    mlp.fit(x_train, y_train, batch_size=128, epochs=args.epochs,
            validation_data=(x_test, y_test), verbose=2)

    res = mlp.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {res[1] * 100:.2f}%")


if __name__ == "__main__":
    main()
