"""The record of a reproduction: claims with theory beside measurement, and the profiles to draw.

`gradscope reproduce NAME` measures; this module holds what it measured as
plain data, saved as ``reproduction.json`` in the run folder, so that
``gradscope report FOLDER`` prints the same table and redraws the same
figures without TensorFlow.

Example:

>>> claim = Claim("5 tanh layers", "factor per layer", "sqrt(n Var W)", theory=0.577, measured=0.575,
...               tolerance=0.05)
>>> claim.agrees, claim.deviation_text
(True, '0.35% off')
>>> record = Reproduction("glorot2010", "Glorot & Bengio (2010)", [claim])
>>> Reproduction.from_dict(record.to_dict()) == record
True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from gradscope.history import GradientHistory, RunFolderError, atomic_write, dumps_json

REPRODUCTION_FILE = "reproduction.json"
REPRODUCTION_FORMAT = "gradscope-reproduction"
_VERSION = 1


@dataclass
class Claim:
    """One row of the table: a paper's claim, its closed form and what was measured.

    A numeric claim agrees when ``|measured / theory - 1| <= tolerance`` (relative). A claim
    about a verdict (``theory`` and ``measured`` None) gives ``holds`` itself, and
    ``theory_text`` / ``measured_text`` say what was expected and seen.

    Args:
        setup: the network and initialisation, in words.
        quantity: what is compared.
        formula: the closed form, with the paper's equation numbers.
        theory: the closed form's value. Defaults to `None` (a verdict claim).
        measured: the measured value. Defaults to `None` (a verdict claim).
        tolerance: the relative tolerance of agreement. Defaults to `0.05`.
        theory_text: the theory as shown; defaults to ``theory`` with 3 significant digits.
        measured_text: the measurement as shown; defaults to ``measured`` likewise.
        holds: for a verdict claim, whether it held. Defaults to `None`.
    """

    setup: str
    quantity: str
    formula: str
    theory: float | None = None
    measured: float | None = None
    tolerance: float = 0.05
    theory_text: str | None = None
    measured_text: str | None = None
    holds: bool | None = None

    @property
    def deviation(self) -> float:
        """|measured / theory - 1|; NaN for a verdict claim."""
        if self.theory is None or self.measured is None:
            return math.nan
        if self.theory == 0:
            return 0.0 if self.measured == 0 else math.inf
        return abs(self.measured / self.theory - 1)

    @property
    def agrees(self) -> bool:
        if self.holds is not None:
            return self.holds
        return self.deviation <= self.tolerance

    @property
    def deviation_text(self) -> str:
        """How far apart they are: ``"0.3% off"``, ``"exact"``, or the verdict for a verdict claim."""
        if self.holds is not None:
            return "as claimed" if self.holds else "not as claimed"
        if self.deviation == 0:
            return "exact"
        return f"{100 * self.deviation:.2g}% off" if self.deviation < 10 else f"{self.deviation:.3g}x off"

    @property
    def tolerance_text(self) -> str:
        """The tolerance as the table shows it: ``"within 5%"``, ``"exact"``, or the stated criterion."""
        if self.holds is not None:
            return "criterion stated"
        return "exact" if self.tolerance == 0 else f"within {100 * self.tolerance:g}%"

    def shown_theory(self) -> str:
        """The theory cell: the claim's own text, or its value."""
        return self.theory_text or _number(self.theory)

    def shown_measured(self) -> str:
        """The measured cell: the claim's own text, or its value."""
        return self.measured_text or _number(self.measured)


def _plain_dict(values: dict[str, Any]) -> dict[str, Any]:
    """Each dataclass among ``values`` (or in a list there) as a plain dictionary, for JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, list):
            return [plain(v) for v in value]
        return asdict(value) if is_dataclass(value) else value

    return {key: plain(value) for key, value in values.items()}


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.4g}"


@dataclass
class Series:
    """One line of a figure: measured values at ``x``, and the theory's values there (or None).

    Args:
        label: the legend's text.
        x: the positions (layer numbers, steps or points s).
        measured: the measured values, one per ``x``.
        theory: the closed form's values, one per ``x``. Defaults to `None`, no theory line.
    """

    label: str
    x: list[float]
    measured: list[float]
    theory: list[float] | None = None


@dataclass
class Figure:
    """One figure of a reproduction: series drawn on the same axes.

    Args:
        name: the PNG's file name without ``.png``.
        title: the title.
        xlabel: the x axis' label.
        ylabel: the y axis' label.
        series: the lines.
        log_y: a log scale on the y axis. Defaults to `True`.
    """

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = True


@dataclass
class Reproduction:
    """What ``gradscope reproduce NAME`` measured: the claims, the figures and the facts of the set-up.

    Args:
        name: the reproduction's name (``glorot2010``, ``he2015``, ``lecture``).
        title: the papers or lecture, in words.
        claims: the table's rows.
        figures: the figures. Defaults to none.
        notes: one-line facts about the set-up (data, batches, sizes). Defaults to none.
        config: the settings it ran with (``full``, ``seed``, ``dataset``, timings). Defaults to empty.
        runs: the names of the recorded runs saved beside it, ``runs/<name>/`` in its folder. Defaults to none.
        histories: the records themselves, by name, until they are saved; not part of ``reproduction.json``.
            Defaults to none.
    """

    name: str
    title: str
    claims: list[Claim]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    histories: dict[str, GradientHistory] = field(default_factory=dict, compare=False, repr=False)

    @property
    def agreed(self) -> int:
        """How many claims agree."""
        return sum(claim.agrees for claim in self.claims)

    def to_dict(self) -> dict[str, Any]:
        # Not asdict(self): it would deep-copy the histories, which stay out of the file.
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "histories"}
        return {"format": REPRODUCTION_FORMAT, "version": _VERSION, **_plain_dict(plain)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reproduction:
        """The record from `to_dict`'s dictionary.

        Args:
            data: the dictionary (as read from ``reproduction.json``).
        """
        figures = [Figure(**{**f, "series": [Series(**s) for s in f["series"]]}) for f in data.get("figures", [])]
        return cls(name=data["name"], title=data["title"], claims=[Claim(**c) for c in data["claims"]],
                   figures=figures, notes=list(data.get("notes", [])), config=dict(data.get("config", {})),
                   runs=list(data.get("runs", [])))


def save_reproduction(record: Reproduction, folder: str | os.PathLike) -> Path:
    """Writes ``reproduction.json`` into ``folder`` (made if missing); returns the file.

    Args:
        record: the reproduction.
        folder: the run folder.
    """
    path = Path(folder) / REPRODUCTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(dumps_json(record.to_dict())))
    return path


def load_reproduction(folder: str | os.PathLike) -> Reproduction:
    """Reads the record a reproduction folder holds.

    Args:
        folder: a folder written by ``gradscope reproduce``.

    Raises:
        RunFolderError: the file is missing or not a reproduction (one line saying why).

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_reproduction(Reproduction("lecture", "the lecture", []), folder)
    >>> load_reproduction(folder).name
    'lecture'
    """
    path = Path(folder) / REPRODUCTION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(folder, f"no {REPRODUCTION_FILE}: not a folder written by 'gradscope reproduce'") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(path, f"cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != REPRODUCTION_FORMAT:
        raise RunFolderError(path, f"is not a gradscope reproduction (format {REPRODUCTION_FORMAT!r} expected)")
    try:
        return Reproduction.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise RunFolderError(path, f"is damaged ({type(exc).__name__}: {exc})") from None
