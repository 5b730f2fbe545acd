"""Data shaped for a given Keras model: the user's arrays made to fit it, or random ones like it.

`fit_data` lays a user's inputs and targets out as a model takes them (a
flattened image in the model's input shape, class labels as one-hot rows
for a non-sparse loss) and refuses, in one line naming the expected shape
and the given one, data that does not fit (`InspectError`).
`synthetic_data` draws random inputs and targets shaped like the model's,
for a look at its weights that says nothing about any data. `read_data`
reads ``gradscope inspect --data PATH``.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
>>> model.compile(loss="categorical_crossentropy")
>>> x, y = fit_data(model, np.zeros((5, 4)), np.array([0, 1, 2, 0, 1]))
>>> x.shape, y.shape
((5, 2, 2, 1), (5, 3))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

#: The length given to an input dimension the model leaves open (a sequence's), for synthetic data.
SYNTHETIC_OPEN_DIM = 16

#: What synthetic data says and does not say, printed with it.
SYNTHETIC_NOTICE = ("synthetic data: random inputs and targets shaped like the model's; the gradients show "
                    "the model's weights on noise and say nothing about how it trains on your data")


class InspectError(ValueError):
    """A model, loss or data that cannot be inspected together; the message is one line.

    `gradscope.inspection` raises it too, for a file that is not a model and a
    model without trainable weights or loss.
    """


def model_inputs(model: Any) -> list[Any] | None:
    """The model's symbolic inputs, or None when it has none (a subclassed model)."""
    try:
        return list(model.inputs or []) or None
    except (AttributeError, ValueError):
        return None


def _outputs(model: Any) -> list[Any] | None:
    try:
        return list(model.outputs or []) or None
    except (AttributeError, ValueError):
        return None


def shape_text(shape: Any) -> str:
    """A per-sample shape as people write it: ``(28, 28, 1)``, ``(None,)`` for an open dimension.

    Example:

    >>> shape_text((None, 28, 28, 1)[1:]), shape_text([10])
    ('(28, 28, 1)', '(10,)')
    """
    return str(tuple(None if d is None else int(d) for d in shape))


def _fits(expected: tuple, given: tuple) -> bool:
    return len(expected) == len(given) and all(e is None or e == g for e, g in zip(expected, given, strict=True))


def fit_data(model: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``x, y`` made to fit ``model``, or `InspectError` naming the mismatch.

    The model must be compiled (its loss decides the targets' form). Inputs
    are reshaped when only the layout differs (784 values for a 28x28x1
    input), cast to the input's dtype (whole numbers only, for an integer
    input) and class labels turned into one-hot rows for a non-sparse loss.
    One small batch is then passed through the model and its loss, so any
    other mismatch shows up here, not in the middle of a compiled step.

    Args:
        model: a compiled model with one input and one output.
        x: the inputs, samples first.
        y: the targets, samples first.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    >>> model.compile(loss="mse")
    >>> fit_data(model, np.ones((3, 5)), np.ones((3, 2)))
    Traceback (most recent call last):
    ...
    gradscope.model_data.InspectError: the model expects inputs of shape (6,) per sample; the data gives (5,)
    """
    if not all(hasattr(a, "shape") or isinstance(a, (list, tuple)) for a in (x, y)):
        raise InspectError(f"expected arrays x and y, samples first; got {type(x).__name__} and {type(y).__name__} "
                           "(a tf.data.Dataset trains under gradscope.train or GradientMonitor instead)")
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise InspectError(f"expected numeric arrays x and y; got dtypes {x.dtype} and {y.dtype}")
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0:
        raise InspectError(f"expected inputs and targets with samples first; got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise InspectError(f"x has {len(x):,} samples but y {len(y):,}: they must match one to one")
    inputs = model_inputs(model)
    if inputs is not None:
        expected, dtype = tuple(inputs[0].shape[1:]), str(inputs[0].dtype)
        given = x.shape[1:]
        if not _fits(expected, given):
            if None in expected or math.prod(expected) != math.prod(given):
                raise InspectError(f"the model expects inputs of shape {shape_text(expected)} per sample; "
                                   f"the data gives {shape_text(given)}")
            x = x.reshape((len(x), *expected))  # the same values, laid out as the model takes them
        if "int" in dtype and x.dtype.kind == "f":
            if not np.array_equal(x, np.floor(x)):
                raise InspectError(f"the model expects {dtype} inputs (token ids); the data gives "
                                   f"{x.dtype} values that are not whole numbers")
        x = x.astype(dtype if ("int" in dtype or "float" in dtype) else np.float32)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
    _check_token_ids(model, x)
    y = _targets(model, y)
    _probe(model, x, y)
    return x, y


def _check_token_ids(model: Any, x: np.ndarray) -> None:
    """An Embedding that reads the input takes ids below its vocabulary size; TensorFlow
    would fail mid-step on another (on a CPU) or read zeros (on a GPU)."""
    vocabulary = _first_embedding_vocabulary(model) if model.built else None
    if vocabulary is not None and x.dtype.kind in "iu" and (x.min() < 0 or x.max() >= vocabulary):
        raise InspectError(f"the model's Embedding takes token ids 0..{vocabulary - 1}; the data holds ids "
                           f"from {int(x.min())} to {int(x.max())}")


def _loss_kind(loss: Any) -> str:
    """'sparse', 'onehot', 'binary' or 'real': the form of targets a loss takes."""
    name = loss if isinstance(loss, str) else (getattr(loss, "name", None) or getattr(loss, "__name__", ""))
    name = str(name).lower().replace("_", "")
    if "sparse" in name:
        return "sparse"
    if "categorical" in name or name in ("kld", "kldivergence", "kullbackleiblerdivergence", "poisson"):
        return "onehot"
    if "binary" in name or "hinge" in name:
        return "binary"
    return "real"


def _output_shape(model: Any) -> tuple | None:
    outputs = _outputs(model)
    if outputs is None:
        return None
    if len(outputs) > 1:
        raise InspectError(f"the model has {len(outputs)} outputs; inspect feeds one target array")
    return tuple(outputs[0].shape[1:])


def _targets(model: Any, y: np.ndarray) -> np.ndarray:
    out = _output_shape(model)
    kind = _loss_kind(getattr(model, "loss", None))
    labels = y.ndim == 1 and y.dtype.kind in "iu"
    if out is not None and labels and kind != "sparse" and len(out) == 1 and out[0] and out[0] > 1:
        units = int(out[0])
        if y.min() < 0 or y.max() >= units:
            raise InspectError(f"the targets are class labels {int(y.min())}..{int(y.max())}, but the model has "
                               f"outputs of shape {shape_text(out)}: expected labels 0..{units - 1}")
        return np.eye(units, dtype=np.float32)[y]
    if kind == "sparse" and y.dtype.kind in "iu":
        return y  # class numbers, as a sparse loss takes them
    return y.astype(np.float32)


def _probe(model: Any, x: np.ndarray, y: np.ndarray) -> None:
    """Passes two samples through the model and its loss: a mismatch fails here, in words."""
    inputs = model_inputs(model)
    expected = shape_text(inputs[0].shape[1:]) if inputs else "its own"
    try:
        pred = model(x[:2], training=False)
    except Exception as exc:
        raise InspectError(f"the model cannot take inputs of shape {shape_text(x.shape[1:])} per sample "
                           f"(expected {expected}): {_first_line(exc)}") from None
    try:
        loss = model.compute_loss(x=x[:2], y=y[:2], y_pred=pred, training=False)
        float(loss)
    except Exception as exc:
        raise InspectError(f"the loss cannot compare targets of shape {shape_text(y.shape[1:])} per sample "
                           f"with outputs of shape {shape_text(tuple(pred.shape[1:]))}: {_first_line(exc)}"
                           ) from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)


def synthetic_data(model: Any, samples: int, loss: Any = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and targets shaped like ``model``'s: for a quick look at its weights, not at any data.

    Inputs have the model's input shape and dtype (an open dimension, a
    sequence's length, gets `SYNTHETIC_OPEN_DIM`): integer token ids below
    the vocabulary size when an `Embedding` reads the input, else standard
    normal numbers. Targets match the output and the loss: class numbers
    (sparse losses), one-hot rows (categorical), 0/1 (binary, hinge), else
    standard normal numbers.

    Args:
        model: a built model with one input and one output.
        samples: how many samples.
        loss: the loss the targets are for. Defaults to the model's.
        seed: seed of the draw. Defaults to `0`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
    ...                           keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    >>> x, y = synthetic_data(model, 8, loss="categorical_crossentropy")
    >>> x.shape, str(x.dtype), bool(x.max() < 20), y.shape, y.sum(axis=1).tolist() == [1.0] * 8
    ((8, 5), 'int32', True, (8, 3), True)
    """
    import keras

    rng = np.random.default_rng(seed)
    inputs = model_inputs(model)
    if inputs is None:
        raise InspectError(f"model {model.name!r} has no known input shape (give it a keras.Input); "
                           "synthetic data needs one")
    if len(inputs) > 1:
        raise InspectError(f"model {model.name!r} has {len(inputs)} inputs; inspect feeds one input array")
    shape = tuple(SYNTHETIC_OPEN_DIM if d is None else int(d) for d in inputs[0].shape[1:])
    dtype = str(inputs[0].dtype)
    vocabulary = _first_embedding_vocabulary(model)
    if vocabulary is not None or "int" in dtype:
        x = rng.integers(0, vocabulary or 10, size=(samples, *shape)).astype("int32" if "float" in dtype else dtype)
    else:
        x = rng.standard_normal((samples, *shape)).astype(dtype if "float" in dtype else np.float32)
    out = _output_shape(model)
    if out is None:
        out = tuple(keras.ops.convert_to_numpy(model(x[:1])).shape[1:])
    out = tuple(SYNTHETIC_OPEN_DIM if d is None else int(d) for d in out)
    kind = _loss_kind(loss if loss is not None else getattr(model, "loss", None))
    units = out[-1] if out else 1
    if kind == "sparse":
        y = rng.integers(0, max(units, 2), size=(samples, *out[:-1]))
    elif kind == "onehot":
        y = np.eye(units, dtype=np.float32)[rng.integers(0, units, size=(samples, *out[:-1]))]
    elif kind == "binary":
        y = rng.integers(0, 2, size=(samples, *out)).astype(np.float32)
    else:
        y = rng.standard_normal((samples, *out)).astype(np.float32)
    return x, y


def _first_embedding_vocabulary(model: Any) -> int | None:
    """The input size of the Embedding that reads the model's input first, if that layer is one."""
    import keras

    from gradscope.model_layers import watched_layers

    specs = watched_layers(model)
    if specs and isinstance(specs[0].layer, keras.layers.Embedding):
        return int(specs[0].layer.input_dim)
    return None


def read_data(path: str | Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Inputs, targets and notices from ``--data PATH``.

    An ``.npz`` with arrays ``x`` and ``y`` is read as saved (any shape);
    anything else as ``gradscope run`` reads it (`gradscope.data.load_dataset`:
    MNIST IDX files, or an ``.npz`` with ``x_train, y_train, x_test, y_test``),
    whose training images and labels are used.

    Args:
        path: the file or folder.
        seed: seeds the split of a source without a validation set.

    Raises:
        gradscope.data.DataError: unreadable or bad data, in one line.

    Example:

    >>> x, y, notices = read_data("pairs.npz")  # doctest: +SKIP
    """
    from gradscope.data import DataError, load_dataset, load_xy, npz_keys

    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".npz":
        keys = npz_keys(path)
        if {"x", "y"} <= keys:
            x, y = load_xy(path)
            return x, y, []
        if not {"x_train", "y_train", "x_test", "y_test"} <= keys:
            raise DataError(f"{path.name} holds {', '.join(sorted(keys)) or 'nothing'}; expected arrays x and y, "
                            "or x_train, y_train, x_test, y_test")
    data = load_dataset("mnist", path, seed=seed)
    return data.x_train, data.y_train, list(data.notices)
