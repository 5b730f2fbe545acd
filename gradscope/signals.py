"""Stopping on a signal without losing the run: Ctrl-C, SIGTERM and SIGHUP.

A batch scheduler's time limit, ``timeout`` and ``docker stop`` send SIGTERM;
a closed terminal sends SIGHUP; a person presses Ctrl-C (SIGINT). gradscope
treats the three alike: training stops at the end of the current step, every
recorded step is saved, one line says so, and the exit code is 128 plus the
signal's number (130, 143 or 129), as shells report it.

`StopSignals` is the one place this is decided. While it is active:

* outside training (loading data, importing TensorFlow) a signal raises
  `Interrupted` at once;
* during training, inside `training()`, the handler only notes the signal,
  and the callback raises `Interrupted` at the end of the step: a step is
  never cut in two, and an exception lost in a finaliser cannot swallow it;
* while the run is saved, inside `shielded()`, further signals are noted and
  ignored, so a second Ctrl-C cannot leave half a run folder.

Example:

>>> import os, signal
>>> with StopSignals() as stop:
...     try:
...         os.kill(os.getpid(), signal.SIGTERM)
...     except Interrupted as exc:
...         print(exc.signal_name, exc.exit_code)
SIGTERM 143
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: The signals that stop training; SIGHUP does not exist on Windows.
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal; ``exit_code`` is 128 plus its number.

    A `KeyboardInterrupt`, so code that already cleans up after Ctrl-C
    (Keras' own, ``finally`` blocks) does the same for SIGTERM and SIGHUP.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        self.exit_code = 128 + self.signum
        super().__init__(self.signal_name)


class StopSignals:
    """Handles SIGINT, SIGTERM and SIGHUP for a command; see the module docstring.

    Use it as a context manager around the whole command, `training()`
    around ``fit``/`gradscope.train` with `callback()` among the callbacks,
    and `shielded()` around saving. Outside the main thread it does nothing
    (Python delivers signals to the main thread only). It imports no
    TensorFlow, so it can guard the import itself.
    """

    def __init__(self) -> None:
        #: The first signal received, or None.
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._mode = "raise"  # raise, note (training) or ignore (saving)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        if self._mode == "raise":
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def training(self) -> Iterator[StopSignals]:
        """Signals stop training at the end of the current step."""
        self.check()
        previous, self._mode = self._mode, "note"
        try:
            yield self
        finally:
            self._mode = previous

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Signals are noted but cannot interrupt the body (a save)."""
        previous, self._mode = self._mode, "ignore"
        try:
            yield
        finally:
            self._mode = previous

    def check(self) -> None:
        """Raises `Interrupted` if a signal came in."""
        if self.received is not None:
            raise Interrupted(self.received)

    def callback(self) -> Any:
        """A Keras callback that stops training at the end of a step after a signal."""
        import keras

        stop = self

        class StopAtStepEnd(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                stop.check()

        return StopAtStepEnd()
