"""gradscope under tf.distribute: one row per global step, equal to one device.

Logical CPU devices and worker clusters must be set up before TensorFlow
initialises its devices, so each test runs tests/distribute_worker.py in
fresh processes and checks the JSON it prints.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distribute_worker.py")
ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-5


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _array(values) -> np.ndarray:
    return np.array(values, dtype=float)  # None (NaN in the record) -> nan


def _assert_same_history(got: dict, want: dict) -> None:
    assert got["steps"] == want["steps"]
    for key in ("grad_norm", "variable_grad_norm", "weight_norm", "update_norm", "update_ratio", "backprop",
                "act_mean", "act_std", "dead", "dact_mean", "saturation", "loss", "accuracy"):
        np.testing.assert_allclose(_array(got[key]), _array(want[key]), rtol=RTOL, atol=1e-7, err_msg=key)


@pytest.fixture(scope="module")
def mirrored() -> dict:
    done = subprocess.run([sys.executable, str(WORKER), "mirrored"], capture_output=True, text=True, env=_env(),
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = _last_json(done.stdout)
    result["stderr"] = done.stderr
    return result


@pytest.mark.slow
def test_mirrored_runs_on_two_logical_cpu_devices_with_a_notice(mirrored):
    assert mirrored["replicas"] == 2
    assert "2 logical CPU devices" in mirrored["notice"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fit", "train"])
def test_mirrored_gives_one_row_per_step_of_the_applied_gradients(mirrored, how):
    got = mirrored[how]
    assert got["steps"] == [0, 1]  # 32 samples, global batch 16: two rows, not one per replica
    # Step 0 against one GradientTape over the global batch, on one device.
    np.testing.assert_allclose(got["variable_grad_norm"][0], mirrored["tape"], rtol=RTOL)
    # Everything else against the same run on one device: the global batch's statistics.
    _assert_same_history(got, mirrored["single"])
    assert got["histogram"] == mirrored["single"]["histogram"]  # every replica's samples binned


@pytest.mark.slow
def test_mirrored_raises_no_false_alarm_and_names_the_replica_that_went_bad(mirrored):
    assert mirrored["fit_nonfinite"] is False
    # Sample 12 of the first batch of 16 is on the second replica's share.
    assert mirrored["bad"].startswith("non-finite values (NaN/Inf) first appeared at step 0 in the output of layer")
    assert mirrored["bad"].endswith("(on replica 1 only)")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_chief_records_the_single_device_history_and_alone_writes(tmp_path):
    import gradscope
    sys.path.insert(0, str(WORKER.parent))
    try:
        import distribute_worker as dw
    finally:
        sys.path.remove(str(WORKER.parent))

    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "worker", str(tmp_path)], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=_env(TF_CONFIG=config)))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=600)  # a guard against a hang: alone, a worker takes ~10 s of CPU
            assert p.returncode == 0, err[-3000:]
            outs.append((out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    chief, other = (_last_json(out) for out, _ in outs)
    assert chief["replicas"] == 2
    # The same model, data and global batch on one device, in this process.
    x, y = dw.data()
    single = gradscope.train(dw.model(), x, y, batch_size=16, shuffle=False)
    _assert_same_history(chief["history"], dw.record(single))
    _assert_same_history(other["history"], chief["history"])  # every worker records; one writes
    assert chief["saved"] is not None and other["saved"] is None
    assert [p.name for p in tmp_path.iterdir()] == [Path(chief["saved"]).name]
    # Only the chief showed the live view and the summary.
    assert "gradscope summary" in outs[0][0]
    assert outs[1][0].strip().splitlines()[:-1] == []
    assert "gradscope" not in outs[1][1]


@pytest.mark.parametrize(("config", "chief"), [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": {"chief": ["c:0"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
])
def test_the_chief_is_the_chief_task_or_else_worker_0(monkeypatch, config, chief):
    from gradscope.distributed import is_chief

    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert is_chief() is chief


def test_other_workers_print_no_notice(monkeypatch, capsys):
    from gradscope.session import notice

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    notice("gradscope: a notice")
    monkeypatch.delenv("TF_CONFIG")
    notice("gradscope: another")
    assert capsys.readouterr().err == "gradscope: another\n"


def test_run_devices_once_tensorflow_set_up_its_devices_is_one_line_and_exit_2(capsys, tmp_path):
    import tensorflow as tf

    from gradscope.cli import main

    tf.constant(0.0)  # this process's TensorFlow has set up its devices
    if tf.config.list_physical_devices("GPU") or len(tf.config.list_logical_devices("CPU")) > 1:
        pytest.skip("this process has several devices already")
    out = tmp_path / "run"
    code = main(["run", "--devices", "2", "--dataset", "digits", "--layers", "8", "--steps", "1", "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == (
        "gradscope run: error: --devices 2: cannot split the CPU into 2 devices: TensorFlow has already set up "
        "its devices (ask for the devices before anything runs on TensorFlow)\n")
    assert not out.exists()
