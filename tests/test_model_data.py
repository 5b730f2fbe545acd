"""gradscope.model_data: data made to fit a model, and synthetic data shaped like it (no training here)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradscope.model_data import SYNTHETIC_OPEN_DIM, InspectError, fit_data, synthetic_data


def compiled(model: keras.Model, loss: str) -> keras.Model:
    model.compile(loss=loss)
    return model


def image_model(loss: str = "categorical_crossentropy") -> keras.Model:
    return compiled(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                      keras.layers.Dense(3, activation="softmax")]), loss)


def test_flattened_images_are_laid_out_as_the_model_takes_them_and_labels_become_one_hot():
    images = np.arange(5 * 16, dtype=np.float32).reshape(5, 16) / 80
    x, y = fit_data(image_model(), images, np.array([0, 2, 1, 2, 0]))
    assert x.shape == (5, 4, 4, 1) and np.array_equal(x.reshape(5, 16), images)
    assert y.tolist() == np.eye(3)[[0, 2, 1, 2, 0]].tolist() and y.dtype == np.float32


def test_a_sparse_loss_keeps_the_class_numbers():
    x, y = fit_data(image_model("sparse_categorical_crossentropy"), np.zeros((4, 4, 4, 1)), np.array([0, 1, 2, 1]))
    assert y.tolist() == [0, 1, 2, 1] and y.dtype.kind == "i"


@pytest.mark.parametrize("x, y, words", [
    (np.zeros((4, 15)), np.zeros(4, int), "the model expects inputs of shape (4, 4, 1) per sample; "
                                          "the data gives (15,)"),
    (np.zeros((4, 16)), np.array([0, 1, 2, 3]), "the targets are class labels 0..3, but the model has outputs of "
                                                "shape (3,): expected labels 0..2"),
    (np.zeros((4, 16)), np.zeros(3, int), "x has 4 samples but y 3: they must match one to one"),
    (np.zeros((4, 16)), np.zeros((4, 5)), "the loss cannot compare targets of shape (5,) per sample with outputs of "
                                          "shape (3,)"),
    (np.array(["a"] * 4), np.zeros(4), "expected numeric arrays x and y; got dtypes <U1 and float64"),
])
def test_data_that_does_not_fit_is_one_line_naming_the_mismatch(x, y, words):
    with pytest.raises(InspectError) as err:
        fit_data(image_model(), x, y)
    assert words in str(err.value) and "\n" not in str(err.value)


def token_model(loss: str) -> keras.Model:
    return compiled(keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(20, 4),
                                      keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)]), loss)


def test_synthetic_token_ids_stay_below_the_vocabulary_and_an_open_length_is_filled():
    x, y = synthetic_data(token_model("sparse_categorical_crossentropy"), 64)
    assert x.shape == (64, SYNTHETIC_OPEN_DIM) and x.dtype == np.int32 and 0 <= x.min() and x.max() < 20
    assert y.shape == (64,) and set(np.unique(y)) == {0, 1, 2}
    with pytest.raises(InspectError, match=r"Embedding takes token ids 0..19; the data holds ids from 0 to 25"):
        fit_data(token_model("mse"), np.array([[0, 25]] * 4), np.zeros((4, 3)))


@pytest.mark.parametrize("loss, check", [
    ("categorical_crossentropy", lambda y: y.shape == (32, 3) and (y.sum(axis=1) == 1).all() and set(y.flat) == {0, 1}),
    ("binary_crossentropy", lambda y: y.shape == (32, 3) and set(y.flat) == {0.0, 1.0}),
    ("mse", lambda y: y.shape == (32, 3) and y.dtype == np.float32 and 0.5 < y.std() < 1.5),
])
def test_synthetic_targets_take_the_form_the_loss_takes(loss, check):
    x, y = synthetic_data(image_model(loss), 32, seed=3)
    assert x.shape == (32, 4, 4, 1) and x.dtype == np.float32
    assert check(y)
    fit_data(image_model(loss), x, y)  # and they fit the model they were drawn for
