"""StopSignals: a signal raises at once outside training, stops at a step's end in it, and waits out a save."""

from __future__ import annotations

import os
import signal

import pytest

from gradscope.signals import Interrupted, StopSignals


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_outside_training_a_signal_raises_at_once_with_its_exit_code(signame, code):
    before = signal.getsignal(getattr(signal, signame))
    with pytest.raises(Interrupted) as caught, StopSignals():
        _send(getattr(signal, signame))
    assert (caught.value.signal_name, caught.value.exit_code) == (signame, code)
    assert isinstance(caught.value, KeyboardInterrupt)  # code that cleans up after Ctrl-C does so here too
    assert signal.getsignal(getattr(signal, signame)) is before  # handlers given back


def test_in_training_a_signal_is_noted_and_the_step_end_raises():
    with StopSignals() as stop, stop.training():
        callback = stop.callback()
        _send(signal.SIGTERM)  # mid-step: nothing happens yet
        assert stop.received == signal.SIGTERM
        with pytest.raises(Interrupted, match="SIGTERM"):
            callback.on_train_batch_end(0)


def test_a_signal_while_saving_cannot_cut_the_save_short():
    saved = []
    with StopSignals() as stop:
        with stop.shielded():
            _send(signal.SIGINT)
            _send(signal.SIGINT)  # pressed twice
            saved.append("everything")
        assert saved == ["everything"]
        with pytest.raises(Interrupted, match="SIGINT"):
            stop.check()  # and then the command stops, with the first signal's code
