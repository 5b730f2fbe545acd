"""The recording session: attach, flush, detach, and what it keeps between fits."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from gradscope.session import RecordingOptions, RecordingSession


def _model(width: int = 8) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, activation="tanh"), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _fit(model: keras.Model, session: RecordingSession, steps: int = 2) -> None:
    x = np.random.default_rng(0).normal(size=(4 * steps, 4)).astype("float32")
    model.fit(x, np.zeros((4 * steps, 2), "float32"), batch_size=4, verbose=0)


def test_a_second_fit_of_the_same_model_continues_the_record_and_reuses_the_trace():
    model, session = _model(), RecordingSession(RecordingOptions())
    assert session.attach(model)
    _fit(model, session)
    session.flush(epoch=0)
    hooked, record = model.train_function, session.history
    session.detach()
    assert model.train_function is None  # the model got back the function it had: none
    assert session.attach(model)
    assert model.train_function is hooked  # no second trace
    _fit(model, session, steps=3)
    assert session.flush(epoch=1).rows == 3
    session.detach()
    assert session.history is record and session.history.steps.tolist() == [0, 1, 2, 3, 4]
    assert session.history.scalars["epoch"].tolist() == [0, 0, 1, 1, 1]


def test_another_model_or_continue_history_false_starts_a_new_record():
    session = RecordingSession(RecordingOptions())
    first = _model()
    session.attach(first)
    _fit(first, session)
    session.flush(epoch=0)
    session.detach()
    old = session.history
    second = _model(width=6)
    session.attach(second)
    assert session.history is not old and len(session.history) == 0
    session.detach()

    fresh = RecordingSession(RecordingOptions(continue_history=False))
    fresh.attach(first)
    kept = fresh.history
    fresh.detach()
    fresh.attach(first)
    assert fresh.history is not kept
    fresh.detach()


def test_a_model_without_trainable_weights_is_not_attached(capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Activation("tanh")])
    model.compile(optimizer="sgd", loss="mse")
    session = RecordingSession(RecordingOptions())
    assert not session.attach(model) and not session.attached
    assert "cannot hook this model (the model has no layer with trainable weights)" in capsys.readouterr().err


def test_a_nonfinite_value_is_reported_once_by_the_flush_that_fetched_it():
    model, session = _model(), RecordingSession(RecordingOptions())
    session.attach(model)
    _fit(model, session, steps=1)
    assert session.flush(epoch=0).nonfinite is None
    model.layers[0].kernel.assign(np.full((4, 8), np.nan, "float32"))
    _fit(model, session, steps=2)
    flushed = session.flush(epoch=0)
    assert flushed.rows == 2 and flushed.nonfinite is not None
    # Weights broken outside the optimizer show as that layer's output.
    report = flushed.nonfinite
    assert (report.step, report.layer, report.where) == (1, model.layers[0].name, "activations")
    _fit(model, session, steps=1)
    assert session.flush(epoch=0).nonfinite is None  # said once
    session.detach()


def test_the_loop_step_is_rebuilt_only_when_what_it_bakes_in_changes():
    model, session = _model(), RecordingSession(RecordingOptions())
    session.attach(model)
    builds = []

    def build():
        builds.append(1)
        return object(), None

    first = session.loop_step(model, ("xla", False), build)
    assert session.loop_step(model, ("xla", False), build) is first and len(builds) == 1
    session.loop_step(model, ("xla", True), build)  # other options
    model.compile(optimizer="adam", loss="mse")  # a new optimizer and compiled loss
    session.loop_step(model, ("xla", True), build)
    assert len(builds) == 3
    session.detach()


@pytest.mark.parametrize("kwargs, error, words", [
    ({"every": None}, TypeError, "every must be a whole number; got NoneType"),
    ({"every": 2.5}, ValueError, "every must be a whole number of at least 1; got 2.5"),
    ({"weights_every": 0}, ValueError, "weights_every must be a whole number of at least 1"),
    ({"flush_every": 0}, ValueError, "flush_every must be a whole number of at least 1; got 0"),
    ({"every": 10**30}, ValueError, "every must be at most 2,147,483,647"),
    ({"saturation_threshold": 5}, ValueError, "saturation_threshold must be a number between 0 and 1"),
    ({"saturation_threshold": 0.0}, ValueError, "saturation_threshold must be a number between 0 and 1"),
    ({"layers": 3}, TypeError, "layers must be layer names, a function layer -> bool, or None; got int"),
    ({"layers": ["dense", 1]}, TypeError, "layers must be layer names (strings)"),
])
def test_bad_recording_options_raise_specific_errors_naming_the_argument(kwargs, error, words):
    from gradscope import GradientMonitor

    with pytest.raises(error) as caught:
        GradientMonitor(**kwargs)
    assert words in str(caught.value)


def test_one_layer_name_is_one_name_not_its_letters():
    assert RecordingOptions(layers="dense_1").layers == ("dense_1",)
