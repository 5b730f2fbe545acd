"""The reproduction record: agreement within a tolerance, verdict claims, and the folder file read back."""

from __future__ import annotations

import math

import pytest

from gradscope.history import GradientHistory, RunFolderError
from gradscope.reproduction import (
    REPRODUCTION_FILE,
    Claim,
    Figure,
    Reproduction,
    Series,
    load_reproduction,
    save_reproduction,
)


def test_numeric_claim_agrees_within_its_relative_tolerance():
    assert Claim("s", "q", "f", theory=0.5, measured=0.524, tolerance=0.05).agrees
    off = Claim("s", "q", "f", theory=0.5, measured=0.53, tolerance=0.05)
    assert not off.agrees and off.deviation == pytest.approx(0.06) and off.deviation_text == "6% off"
    assert off.tolerance_text == "within 5%" and off.shown_theory() == "0.5" and off.shown_measured() == "0.53"
    exact = Claim("s", "q", "f", theory=0.0, measured=0.0, tolerance=0.0)
    assert exact.agrees and exact.deviation_text == "exact" and exact.tolerance_text == "exact"
    assert not Claim("s", "q", "f", theory=0.0, measured=1e-9, tolerance=0.0).agrees


def test_verdict_claim_holds_or_not_whatever_the_numbers():
    claim = Claim("30 layers", "training", "0.707^29", theory_text="stalls", measured_text="accuracy 11%",
                  holds=True)
    assert claim.agrees and math.isnan(claim.deviation)
    assert (claim.deviation_text, claim.tolerance_text) == ("as claimed", "criterion stated")
    assert not Claim("s", "q", "f", theory_text="trains", measured_text="stalled", holds=False).agrees


def test_record_round_trips_through_its_folder_file(tmp_path):
    record = Reproduction(
        "he2015", "He et al.", [Claim("s", "q", "f", 0.707, 0.70), Claim("t", "q", "f", holds=False)],
        [Figure("backprop", "title", "layer", "rms", [Series("a", [1.0, 2.0], [0.7, 1.0], [0.707, 1.0])])],
        notes=["inputs: digits"], config={"full": False, "seed": 3}, runs=["relu-he_normal"],
        histories={"relu-he_normal": GradientHistory(["hidden_1", "output"])})
    path = save_reproduction(record, tmp_path)
    assert path == tmp_path / REPRODUCTION_FILE
    again = load_reproduction(tmp_path)
    assert again == record and again.agreed == 1 and again.runs == ["relu-he_normal"]
    assert again.histories == {} and "histories" not in path.read_text()  # the records are saved as run folders


def test_loading_a_folder_without_a_reproduction_is_one_line(tmp_path):
    with pytest.raises(RunFolderError, match="no reproduction.json: not a folder written by 'gradscope reproduce'"):
        load_reproduction(tmp_path)
    (tmp_path / REPRODUCTION_FILE).write_text('{"format": "gradscope-run"}')
    with pytest.raises(RunFolderError, match="is not a gradscope reproduction"):
        load_reproduction(tmp_path)
    (tmp_path / REPRODUCTION_FILE).write_text('{"format": "gradscope-reproduction", "name": "x"}')
    with pytest.raises(RunFolderError, match="is damaged"):
        load_reproduction(tmp_path)
    (tmp_path / REPRODUCTION_FILE).write_text("{not json")
    with pytest.raises(RunFolderError, match="cannot be read") as error:
        load_reproduction(tmp_path)
    assert "\n" not in str(error.value)
