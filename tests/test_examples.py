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


NOTEBOOK = EXAMPLES / "notebook.ipynb"


def _cell(nb, source_start: str):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    return cell


def _text(cell, mime: str) -> str:
    """Everything a cell showed as ``mime`` (display data and results), or printed (``"stdout"``)."""
    if mime == "stdout":
        return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    return "".join(o.data.get(mime, "") for o in cell.outputs if o.output_type in ("display_data", "execute_result"))


def _first_step_row(cell) -> str:
    return next(line for line in _text(cell, "stdout").splitlines() if line.startswith("first step"))


def test_the_notebook_runs_headless_and_tells_the_tanh_relu_story(monkeypatch):
    import base64

    import nbformat
    from nbclient import NotebookClient

    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.outputs for c in committed.cells if c.cell_type == "code"), "outputs are committed"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import gradscope\nprint(gradscope.__file__)"))
    # The kernel inherits this environment: this checkout's package, the digits, one short epoch.
    root = str(EXAMPLES.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("GRADSCOPE_DATA", "digits")
    monkeypatch.setenv("GRADSCOPE_EPOCHS", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()

    assert _text(nb.cells[-1], "stdout").strip() == os.path.join(root, "gradscope", "__init__.py")
    # GradientMonitor(verbose=1) in Jupyter: rich draws the status line and the summary as HTML.
    tanh = _cell(nb, "def train(")
    html = _text(tanh, "text/html")
    assert "<pre" in html and "epoch 1/1  step 11/11" in html
    assert "gradscope summary" in html and "Diagnosis" in html and "[vanishing]" in html
    # monitor.plot() shows inline: a PNG, with no pyplot and no %matplotlib magic in the notebook.
    for source in ("tanh.plot()", "relu = train("):
        png = base64.b64decode(_text(_cell(nb, source), "image/png"))
        assert png[:8] == b"\x89PNG\r\n\x1a\n", source
    # The story: at the first step tanh passes hidden_1 far less of hidden_4's gradient than ReLU does,
    # and the committed outputs say the same numbers (the first step does not depend on the epochs).
    row = _first_step_row(_cell(nb, "runs = "))
    tanh_share, relu_share = (float(v) for v in row.split()[-2:])
    assert tanh_share < 0.5 < relu_share
    assert row == _first_step_row(_cell(committed, "runs = "))
