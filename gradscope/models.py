"""The lecture's network: a deep MLP for MNIST, and its parameter count.

784-1024-512-512-512-10, every layer tanh (the output included),
``kernel_initializer='random_uniform'``, zero biases. It has 1,859,082
parameters; the lecture's worked example (4 hidden layers of 500, 10
outputs) has 1,149,010.

Example:

>>> model = lecture_mlp()
>>> model.count_params()
1859082
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

#: Hidden layer widths of the lecture's network.
LECTURE_HIDDEN = (1024, 512, 512, 512)


def mlp_param_count(input_dim: int, hidden: Sequence[int], outputs: int) -> int:
    """Weights plus biases of a fully connected net, by the lecture's formula.

    >>> mlp_param_count(784, (1024, 512, 512, 512), 10)
    1859082
    >>> mlp_param_count(784, (500, 500, 500, 500), 10)
    1149010
    """
    widths = [input_dim, *hidden, outputs]
    return sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))


def default_output_activation(loss: str) -> str:
    """tanh for MSE, as the lecture has it; softmax for cross-entropy."""
    return "softmax" if loss in ("crossentropy", "categorical_crossentropy") else "tanh"


def lecture_mlp(
    input_dim: int = 784,
    hidden: Sequence[int] = LECTURE_HIDDEN,
    outputs: int = 10,
    activation: str = "tanh",
    output_activation: str = "tanh",
    init: str = "random_uniform",
    seed: int | None = None,
    dropout: float = 0.0,
    l2: float = 0.0,
    augment: tuple[int, int] | None = None,
) -> keras.Sequential:
    """The lecture's deep MLP, with the hidden activation and initializer as parameters, and the cures for
    overfitting as options.

    ``activation`` sets the hidden layers only; the output layer keeps
    ``output_activation`` (tanh, as in the lecture). Layer names are
    ``hidden_1`` ... ``hidden_N`` and ``output``, so tables read in depth order.

    Args:
        dropout: the rate of a `Dropout` layer after each hidden layer (``dropout_1`` ...); 0 for none.
        l2: the factor of an L2 kernel regulariser on every layer, ``l2 * sum(W**2)`` added to the loss
            (coupled L2, not AdamW's decoupled weight decay); 0 for none.
        augment: the images' ``(height, width)``: the flat pixels are shifted by up to 10% of each side
            (`RandomTranslation`) and rotated by up to 10 degrees (`RandomRotation`) before the first layer.
            Keras applies both in training only, so validation and prediction see the images as they are.

    Example:

    >>> model = lecture_mlp(64, hidden=[8], dropout=0.5, l2=1e-4, augment=(8, 8))
    >>> [layer.name for layer in model.layers]
    ['as_image', 'shift', 'rotate', 'flat', 'hidden_1', 'dropout_1', 'output']
    """
    import keras  # here, not at the top: `gradscope report` must not need TensorFlow
    layers: list = [keras.Input((input_dim,), name="pixels")]
    if augment is not None:
        layers += [
            keras.layers.Reshape((*augment, 1), name="as_image"),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed, name="shift"),
            keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed, name="rotate"),
            keras.layers.Flatten(name="flat"),
        ]
    regulariser = keras.regularizers.L2(l2) if l2 else None
    for i, units in enumerate(hidden):
        layers.append(
            keras.layers.Dense(
                units,
                activation=activation,
                kernel_initializer=kernel_initializer(init, seed, i),
                bias_initializer="zeros",
                kernel_regularizer=regulariser,
                name=f"hidden_{i + 1}",
            )
        )
        if dropout:
            layers.append(keras.layers.Dropout(dropout, seed=seed, name=f"dropout_{i + 1}"))
    layers.append(
        keras.layers.Dense(
            outputs,
            activation=output_activation,
            kernel_initializer=kernel_initializer(init, seed, len(hidden)),
            bias_initializer="zeros",
            kernel_regularizer=regulariser,
            name="output",
        )
    )
    return keras.Sequential(layers, name="lecture_mlp")


#: Initializers gradscope names beyond Keras' own, with what each draws.
EXTRA_INITIALIZERS = {
    "standard": "U[-1/sqrt(fan_in), 1/sqrt(fan_in)], Glorot & Bengio (2010) eq. 1: n Var(W) = 1/3",
}


def kernel_initializer(name: str, seed: int | None = None, layer: int = 0) -> Any:
    """The Keras initializer called ``name``: any Keras name, or one of `EXTRA_INITIALIZERS`.

    ``standard`` is the "commonly used heuristic" Glorot & Bengio (2010) start from,
    U[-1/sqrt(n), 1/sqrt(n)] with n the layer's fan-in: Keras' `VarianceScaling` with scale 1/3,
    since a uniform law on [-a, a] has variance a^2 / 3.

    Args:
        name: the initializer's name, e.g. ``"standard"``, ``"glorot_uniform"`` or ``"he_normal"``.
        seed: the run's seed; each layer gets its own, derived from it. Defaults to `None`, unseeded.
        layer: the layer's index, for its seed. Defaults to `0`.

    Example:

    >>> import numpy as np
    >>> kernel = np.asarray(kernel_initializer("standard", seed=0)((400, 300)))
    >>> bool(np.abs(kernel).max() <= 1 / np.sqrt(400)), round(float(kernel.var() * 400 * 3), 1)
    (True, 1.0)
    """
    import keras

    if name == "standard":
        init = keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform")
    else:
        init = keras.initializers.get(name)
    if seed is not None and hasattr(init, "seed"):
        # One seed per layer: the same seed everywhere would give every layer
        # of equal shape the very same weights.
        config = init.get_config()
        config["seed"] = seed * 1000 + layer
        init = type(init).from_config(config)
    return init
