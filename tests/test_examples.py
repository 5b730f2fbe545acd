"""The examples run as they are (on the shared MNIST test files, or the offline fallback)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MNIST_DIR

# Every example runs as a script in a process of its own.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_lecture_script_with_the_monitor_runs(tmp_path):
    proc = _run("lecture_mlp_monitored.py", tmp_path)
    assert "gradscope summary" in proc.stdout and "layer 1 gets" in proc.stdout
    assert (tmp_path / "runs" / "lecture-monitored" / "history.npz").is_file()


def _run(script: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    data = ["--data", str(MNIST_DIR)] if MNIST_DIR.is_dir() else []
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--epochs", "1", *data, *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_the_plain_lecture_script_runs(tmp_path):
    out = _run("lecture_mlp.py", tmp_path).stdout
    accuracy = float(out.split("test accuracy:")[1].split("%")[0])
    assert 10.0 < accuracy <= 100.0  # a real evaluation, not a placeholder


def test_tanh_vs_relu_compares_the_two_runs(tmp_path):
    out = _run("tanh_vs_relu.py", tmp_path).stdout
    assert "tanh: layer 1 gets 1/" in out and "relu: layer 1 gets 1/" in out
    # The table ends with the output row (1 for both) and the plot is written.
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("hidden_1 ", "output "))}
    assert rows["output"] == ["1", "1"]
    assert (tmp_path / "runs" / "tanh_vs_relu.png").is_file()


def test_capacity_example_underfits_and_overfits(tmp_path):
    # numpy and matplotlib only: run as a script, without the MNIST flags the other examples take.
    proc = subprocess.run([sys.executable, str(EXAMPLES / "capacity.py"), "--out", str(tmp_path / "fits.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {int(line.split()[0]): [float(v) for v in line.split()[1:]]
            for line in proc.stdout.splitlines() if line.split() and line.split()[0].isdigit()}
    train = [rows[d][0] for d in (1, 3, 12)]
    test = [rows[d][1] for d in (1, 3, 12)]
    assert train[0] > train[1] > train[2]  # more capacity, closer fit to the training points
    assert test[2] > test[1]  # ... but degree 12 predicts new points worse than degree 3
    assert test[0] > test[1]  # and degree 1 underfits
    assert (tmp_path / "fits.png").stat().st_size > 10_000
