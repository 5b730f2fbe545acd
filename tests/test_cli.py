"""The command line end to end, on small runs; output checked as text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MNIST_DIR

# Every test here starts gradscope in a process of its own.
pytestmark = pytest.mark.slow

SMALL = ["--layers", "32,16", "--steps", "30", "--batch-size", "64"]


def gradscope(*args: str, cwd: Path | None = None, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "160", **env_extra}
    return subprocess.run([sys.executable, "-m", "gradscope", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tanh"
    data = ["--data", str(MNIST_DIR), "--limit", "2000"] if MNIST_DIR.is_dir() else ["--dataset", "digits"]
    proc = gradscope("run", "--activation", "tanh", *SMALL, *data, "--weights-every", "5", "--out", str(out))
    return proc, out


def test_run_prints_model_summary_progress_table_and_verdict(saved_run):
    proc, out = saved_run
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    if MNIST_DIR.is_dir():
        assert "only the 10,000 test images were found" in text
        assert f"total {(784 + 1) * 32 + (32 + 1) * 16 + (16 + 1) * 10:,} parameters" in text
    # The model table lists every layer's parameters: (inputs + 1) x units.
    inputs = 784 if MNIST_DIR.is_dir() else 64
    params = {"hidden_1": (inputs + 1) * 32, "hidden_2": (32 + 1) * 16, "output": (16 + 1) * 10}
    model_table = text[text.index("model lecture_mlp"):text.index("total ")]
    for name, count in params.items():
        row = next(line for line in model_table.splitlines() if line.split()[1:2] == [name])
        assert row.split()[-2] == f"{count:,}", row
    for needle in ("model lecture_mlp", "hidden_1", "hidden_2", "output", "step 30/30", "gradscope summary",
                   "ratio to output", "Diagnosis", "layer 1 gets", "saved run to"):
        assert needle in text, needle
    assert "Traceback" not in proc.stderr
    assert "oneDNN" not in proc.stderr  # TensorFlow's start-up chatter is kept out


def test_run_folder_is_documented_format(saved_run):
    _, out = saved_run
    meta = json.loads((out / "run.json").read_text())
    assert meta["layers"] == ["hidden_1", "hidden_2", "output"]
    assert meta["config"]["activation"] == "tanh" and meta["config"]["steps"] == 30
    import numpy as np

    with np.load(out / "history.npz") as data:
        assert data["steps"].tolist() == list(range(30))
        assert data["layer/grad_norm"].shape == (30, 3) and np.isfinite(data["layer/grad_norm"]).all()
        # --weights-every 5: weights measured on steps 0, 5, 10, ... only.
        measured = ~np.isnan(data["layer/weight_norm"]).any(axis=1)
        assert np.flatnonzero(measured).tolist() == list(range(0, 30, 5))
    assert meta["config"]["recording"]["weights_every"] == 5
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["layers"]) == 3 and summary["sentences"]
    for png in ("grad_norms.png", "depth_profile.png", "backprop_norms.png", "activation_histograms.png"):
        assert (out / "plots" / png).stat().st_size > 1000, png


def report_without_tensorflow(*args: str) -> subprocess.CompletedProcess:
    """``gradscope report ARGS`` in a fresh interpreter that fails if TensorFlow gets imported."""
    code = (
        "import sys; from gradscope.cli import main; rc = main(['report', *sys.argv[1:]]); "
        "assert 'tensorflow' not in sys.modules, 'report imported TensorFlow'; sys.exit(rc)"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "160"})


def test_report_shows_the_saved_run_again_without_tensorflow(saved_run):
    _, out = saved_run
    proc = report_without_tensorflow(str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert "30 recorded steps, 3 layers" in proc.stdout
    assert "gradscope summary" in proc.stdout and "Diagnosis" in proc.stdout


def test_report_redraws_the_plots_from_the_record(saved_run, tmp_path):
    import shutil

    _, out = saved_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "plots")
    proc = report_without_tensorflow(str(copy))
    assert proc.returncode == 0, proc.stderr
    for png in ("grad_norms.png", "backprop_norms.png", "depth_profile.png", "activation_histograms.png"):
        path = copy / "plots" / png
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 1000, png
        assert str(path) in proc.stdout, png  # the report says where each plot went


def _broken_run(tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "run.json").write_text('{"layers": ["a"]}')
    (folder / "history.npz").write_bytes(b"not a zip file")
    return folder


def test_bad_inputs_exit_2_with_one_line(tmp_path):
    for args, needle in [
        (["run", "--activation", "tanhh", *SMALL, "--dataset", "digits", "--out", str(tmp_path / "x")],
         "unknown Keras activation 'tanhh'"),
        (["run", "--data", str(tmp_path / "missing")], "missing"),
        (["report", str(tmp_path)], "is not a gradscope run"),
        (["report", str(_broken_run(tmp_path))], "history.npz: not a numpy archive"),
        (["run", "--layers", "10,-3"], "positive layer widths"),
        (["run", "--lr", "0"], "above 0"),
    ]:
        proc = gradscope(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr, (needle, proc.stderr)
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and needle in errors[0], proc.stderr  # argparse adds only a usage line


def test_derivatives_table_shows_the_lecture_value():
    proc = gradscope("derivatives")
    assert proc.returncode == 0, proc.stderr
    assert "4.50e-07" in proc.stdout  # tanh'(8), float64
    assert "rounds to exactly 1.0" in proc.stdout
    row8 = next(line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("8 "))
    assert row8.rstrip(" │").endswith("0")  # float32 autodiff gives exactly 0 at s = 8


def test_derivatives_at_user_given_points():
    import math

    proc = gradscope("derivatives", "--at", "3", "-0.5")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in proc.stdout.splitlines() if line.startswith("│")}
    assert set(rows) == {"3", "-0.5"}
    for s, cells in rows.items():
        x = float(s)
        sig = 1 / (1 + math.exp(-x))
        assert float(cells[0]) == pytest.approx(1 - math.tanh(x) ** 2, rel=5e-3)
        assert float(cells[1]) == pytest.approx(sig * (1 - sig), rel=5e-3)
        assert float(cells[2]) == (1.0 if x > 0 else 0.0)


OFFLINE = (
    # `python -m gradscope ARGS` in a process where no host name resolves: no network,
    # whatever the machine running the tests has.
    "import runpy, socket, sys\n"
    "def offline(*args, **kwargs): raise socket.gaierror('no network (test)')\n"
    "socket.getaddrinfo = offline\n"
    "sys.argv = ['gradscope', *sys.argv[1:]]\n"
    "runpy.run_module('gradscope', run_name='__main__')\n"
)


def test_offline_without_mnist_falls_back_with_a_one_line_notice(tmp_path):
    # An empty Keras cache on a machine with no network: MNIST cannot load.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "160", "KERAS_HOME": str(tmp_path / "keras")}
    proc = subprocess.run([sys.executable, "-c", OFFLINE, "run", "--layers", "16", "--steps", "5", "--quiet",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    notices = [line for line in proc.stdout.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1
    assert "MNIST could not be loaded (no network and no cache at" in notices[0]
    assert notices[0].endswith("Pass --data PATH to use MNIST files.")
    assert "64 inputs" in notices[0]
    from gradscope import load_run

    assert load_run(tmp_path / "run").layer_info[0]["params"] == 64 * 16 + 16  # the input size follows the data


def test_help_teaches():
    proc = gradscope("run", "--help")
    assert proc.returncode == 0
    for needle in ("--activation", "--init", "--output-activation", "--epochs 30", "random_uniform", "Examples:"):
        assert needle in proc.stdout, needle


def test_the_installed_console_script_runs():
    import shutil

    # The script pip installs beside this interpreter, as a user would type it.
    script = shutil.which("gradscope", path=str(Path(sys.executable).parent))
    assert script is not None, "no gradscope script next to the interpreter: is the package installed?"
    proc = subprocess.run([script, "derivatives", "--no-float32", "--at", "8"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "160"})
    assert proc.returncode == 0, proc.stderr
    assert "4.50e-07" in proc.stdout  # tanh'(8), the lecture's figure


def test_compare_runs_each_configuration_and_report_shows_it(tmp_path):
    out = tmp_path / "cmp"
    proc = gradscope("compare", "--activations", "tanh", "relu", "--inits", "random_uniform", "he_normal",
                     "--dataset", "digits", *SMALL, "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for label in ("tanh/random_uniform", "tanh/he_normal", "relu/random_uniform", "relu/he_normal"):
        assert f"{label}: layer 1 gets" in proc.stdout, label
        assert (out / label.replace("/", "-") / "run.json").is_file()
        # Each run is named by where it ends up, not by the folder it is built in.
        assert f"saved run to {out / label.replace('/', '-')}  (show it again" in proc.stdout
    assert ".tmp-" not in proc.stdout and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert (out / "plots" / "comparison.png").stat().st_size > 1000
    assert (out / "plots" / "activations_tanh-random_uniform.png").stat().st_size > 1000
    # The side-by-side table: its columns, and one [final] row per configuration.
    for column in ("configuration", "grad_norm", "backprop", "ratio", "saturated", "dead", "verdict"):
        assert column in proc.stdout, column
    assert proc.stdout.count("[final]") == 4 and proc.stdout.count("acc ") >= 4
    # Same seed, data and step budget for all; the output layer stays tanh
    # (the lecture's) when only the hidden layers are ReLU.
    from gradscope import load_run

    runs = {label: load_run(out / label) for label in ("tanh-random_uniform", "relu-he_normal")}
    steps = {label: tuple(h.steps) for label, h in runs.items()}
    assert len(set(steps.values())) == 1 and len(next(iter(steps.values()))) > 1
    assert {h.config["seed"] for h in runs.values()} == {runs["relu-he_normal"].config["seed"]}
    assert runs["relu-he_normal"].layer_info[0]["activation"] == "relu"
    assert runs["relu-he_normal"].layer_info[-1]["activation"] == "tanh"
    again = gradscope("report", str(out), "--no-plots")
    assert again.returncode == 0, again.stderr
    assert "relu/he_normal: layer 1 gets" in again.stdout


def test_a_ctrl_c_whose_interrupt_was_lost_still_stops_training():
    import signal
    import time

    import keras

    import gradscope
    from gradscope.signals import StopSignals

    before = signal.getsignal(signal.SIGINT)

    class Finaliser(keras.callbacks.Callback):
        """Ctrl-C lands in code that swallows the exception, as Python does in a __del__."""

        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.5)
                except KeyboardInterrupt:
                    pass

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    steps = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    with pytest.raises(KeyboardInterrupt):
        with StopSignals() as stop, stop.training():
            gradscope.train(model, np.ones((64, 4)), np.ones((64, 2)), loss="mse", optimizer="sgd",
                            batch_size=4, epochs=1, callbacks=[Finaliser(), counter, stop.callback()])
    assert steps == [0, 1]  # stopped at the end of the step where Ctrl-C was pressed
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_stops_at_a_step_end_and_keeps_every_recorded_step(tmp_path, signame, code):
    """Ctrl-C, a scheduler's SIGTERM and a closed terminal's SIGHUP alike."""
    import re
    import signal
    import time

    out = tmp_path / "interrupted"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradscope", "run", "--dataset", "digits", "--layers", "16", "--steps", "1000000",
         "--batch-size", "8", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    # Off a terminal the live view prints a status line every few seconds:
    # wait until one reports some steps done, then send the signal.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        match = re.search(r"step (\d+)/", proc.stdout.readline())
        if match and int(match.group(1)) >= 20:
            break
    proc.send_signal(getattr(signal, signame))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == f"gradscope run: interrupted ({signame})"
    assert "Traceback" not in stderr
    from gradscope import load_run

    history = load_run(out)
    assert len(history) >= 20 and f"interrupted: {len(history)} recorded steps saved" in stdout
    assert history.steps.tolist() == list(range(len(history)))  # every step, none lost


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux's /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:")), 0)
    return bool(mask >> (signum - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_signal_before_training_exits_quietly_with_its_code():
    import signal
    import time

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "gradscope", "run", "--dataset", "digits", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Send it as soon as the process handles SIGTERM (its handlers are set
    # before TensorFlow is imported): Linux shows caught signals in SigCgt.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _catches(proc.pid, signal.SIGTERM):
        time.sleep(0.01)
    assert proc.poll() is None, "the command ended before the signal was sent"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert stderr.strip() == "gradscope run: interrupted (SIGTERM)"


def test_reproduce_saves_a_folder_that_report_shows_with_the_same_table(tmp_path, capsys, monkeypatch):
    from gradscope.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "lecture", "--dataset", "digits"]) == 0
    first = capsys.readouterr().out
    out = tmp_path / "runs" / "reproduce-lecture"
    assert f"saved to {Path('runs') / 'reproduce-lecture'}" in first
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "activation_derivative.png", "activation_spread.png", "tanh_derivative.png"]
    assert "[6/6] tanh'(s) and ReLU'(s) by TensorFlow's autodiff" in first  # progress, one line a measurement
    table = first[first.index("lecture: The lecture's claims"):first.index("5 recorded runs")]
    assert "tanh'(8) in float64" in table and "4.501e-07" in table
    # Each measurement is a run folder of its own, which report shows like any run.
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"{a}-{i}-lecture" for a, i in [("tanh", "glorot_uniform"), ("tanh", "he_normal"),
                                                          ("relu", "glorot_uniform"), ("relu", "he_normal"),
                                                          ("tanh", "random_uniform")])
    assert f"5 recorded runs in {Path('runs') / 'reproduce-lecture' / 'runs'}" in first
    assert main(["report", str(out), "--no-plots"]) == 0
    again = capsys.readouterr().out
    assert table in again and "5 recorded runs in" in again
    assert main(["report", str(out / "runs" / "relu-he_normal-lecture"), "--no-plots"]) == 0
    assert "gradscope summary" in capsys.readouterr().out
    assert main(["reproduce", "lecture", "--dataset", "digits", "--out", str(out)]) == 2  # never replaced silently
    assert "a reproduction is saved there; pass --overwrite to replace it" in capsys.readouterr().err
