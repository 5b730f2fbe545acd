"""The examples run as they are (on the shared MNIST test files, or the offline fallback)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import MNIST_DIR

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_lecture_script_with_the_monitor_runs(tmp_path):
    data = ["--data", str(MNIST_DIR)] if MNIST_DIR.is_dir() else []
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "lecture_mlp_monitored.py"), "--epochs", "1", *data],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gradscope summary" in proc.stdout and "layer 1 gets" in proc.stdout
    assert (tmp_path / "runs" / "lecture-monitored" / "history.npz").is_file()
