"""Tests of the TensorBoard writer: events read back through TensorBoard's own data provider."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.context import RequestContext

from gradscope.cli import build_parser, main
from gradscope.diagnosis import diagnose
from gradscope.history import GradientHistory, load_run
from gradscope.render.tensorboard import (
    HISTOGRAM_PREFIX,
    LAYER_SERIES,
    SCALAR_SERIES,
    VERDICT_TAG,
    TensorBoardWriter,
    layer_tags,
    open_record_file,
)
from gradscope.report import save_run

ROOT = Path(__file__).resolve().parents[2]
# Keras (under TensorFlow) takes ">" in a layer name, TensorFlow's summary tags do not.
LAYERS = ("tanh>1", "relu-2", "out")


class Board:
    """What TensorBoard's dashboards read from one run folder, by plugin: ``{tag: {step: value}}``."""

    def __init__(self, logdir: Path, run: str = ".") -> None:
        mux = EventMultiplexer(size_guidance={"tensors": 0})  # 0: keep every event, no sampling
        mux.AddRunsFromDirectory(str(logdir))
        mux.Reload()
        provider = MultiplexerDataProvider(mux, str(logdir))
        ctx = RequestContext()

        def read(plugin: str, scalars: bool = False) -> dict:
            reader = provider.read_scalars if scalars else provider.read_tensors
            data = reader(ctx, experiment_id="", plugin_name=plugin, downsample=10**9).get(run, {})
            convert = (lambda d: d.value) if scalars else (lambda d: d.numpy)
            return {tag: {d.step: convert(d) for d in series} for tag, series in data.items()}

        self.runs = sorted(r.run_name for r in provider.list_runs(ctx, experiment_id=""))
        self.scalars = read("scalars", scalars=True)
        self.histograms = read("histograms")
        self.text = {tag: {s: v.item().decode() for s, v in d.items()} for tag, d in read("text").items()}


def assert_scalars_match(board: Board, history: GradientHistory) -> None:
    """Every step of every layer and series equals the record's (as float32); NaN steps are absent."""
    steps = history.steps.tolist()
    expected = {}
    for series in LAYER_SERIES:
        for i, tag in enumerate(layer_tags(history.layers)):
            expected[f"{series}/{tag}"] = history[series][:, i]
    for name in SCALAR_SERIES:
        expected[name] = history.scalars[name]
    for tag, values in expected.items():
        kept = ~np.isnan(values)
        if not kept.any():
            assert tag not in board.scalars, tag  # e.g. the saturation of a ReLU layer: no tag at all
            continue
        written = board.scalars[tag]
        assert sorted(written) == [s for s, k in zip(steps, kept, strict=True) if k], tag
        got = np.array([written[s] for s in sorted(written)], np.float32)
        np.testing.assert_array_equal(got, values[kept].astype(np.float32), err_msg=tag)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-layer model (tanh, ReLU, softmax) fit for 12 steps in 3 flushes, writing TensorBoard files."""
    import keras

    from gradscope import GradientMonitor

    keras.utils.set_random_seed(3)
    logdir = tmp_path_factory.mktemp("tb") / "live"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 48)]
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="tanh", name=LAYERS[0]),
        keras.layers.Dense(5, activation="relu", name=LAYERS[1]),
        keras.layers.Dense(3, activation="softmax", name=LAYERS[2]),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    monitor = GradientMonitor(tensorboard=logdir, flush_every=5, weights_every=2)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[monitor])
    return monitor.history, logdir


@pytest.mark.slow  # trains (the module's one fit, about 2 s)
def test_monitor_writes_every_step_of_every_layer(trained):
    history, logdir = trained
    assert history.layers == list(LAYERS) and len(history) == 12
    board = Board(logdir)
    assert board.runs == ["."]
    assert_scalars_match(board, history)
    # The tags are the documented ones, for the safe names; weights_every=2 leaves every other update ratio out.
    assert {"grad_norm/tanh_1", "backprop/relu-2", "saturation/tanh_1", "dead/relu-2", "loss"} <= set(board.scalars)
    assert sorted(board.scalars["update_ratio/out"]) == list(range(0, 12, 2))


@pytest.mark.slow  # trains (the module's one fit, about 2 s)
def test_histograms_count_every_sample(trained):
    history, logdir = trained
    board = Board(logdir)
    assert set(history.histograms) == {"start", "end"}
    units = {"tanh_1": 8, "relu-2": 5, "out": 3}
    for tag, width in units.items():
        written = board.histograms[f"{HISTOGRAM_PREFIX}/{tag}"]
        assert sorted(written) == [history.histograms["start"]["step"], history.histograms["end"]["step"]]
        for step, buckets in written.items():
            assert buckets.shape == (40, 3)  # (left edge, right edge, count) per bin
            assert buckets[:, 2].sum() == 8 * width  # batch x units
            np.testing.assert_allclose(buckets[1:, 0], buckets[:-1, 1])  # bins meet
            recorded = next(h for h in history.histograms.values() if h["step"] == step)
            i = list(units).index(tag)
            np.testing.assert_array_equal(buckets[:, 2], recorded["counts"][i])
            assert (buckets[0, 0], buckets[-1, 1]) == tuple(recorded["ranges"][i])
    assert board.histograms[f"{HISTOGRAM_PREFIX}/tanh_1"][0][[0, -1], [0, 1]].tolist() == [-1.0, 1.0]


@pytest.mark.slow  # trains (the module's one fit, about 2 s)
def test_text_summary_holds_the_verdict(trained):
    history, logdir = trained
    text = Board(logdir).text[VERDICT_TAG]
    assert list(text) == [11]  # at the fit's last step
    diagnosis = diagnose(history)
    for sentence in diagnosis.sentences():
        assert sentence in text[11]
    for verdict in diagnosis.layers:
        assert f"| {verdict.name} | {verdict.verdict} |" in text[11]


@pytest.mark.slow  # trains (the module's one fit, about 2 s)
def test_report_exports_the_saved_run_with_the_same_values(trained, tmp_path, capsys):
    history, logdir = trained
    run = save_run(history, tmp_path / "run", plots=False)
    assert main(["report", str(run), "--no-plots", "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "TensorBoard: 12 steps written to" in capsys.readouterr().out
    live, exported = Board(logdir), Board(tmp_path / "tb")
    assert_scalars_match(exported, load_run(run))
    assert exported.scalars == live.scalars
    assert exported.text == live.text
    assert exported.histograms.keys() == live.histograms.keys()
    for tag, moments in live.histograms.items():
        for step, buckets in moments.items():
            np.testing.assert_array_equal(exported.histograms[tag][step], buckets)


def test_writer_adds_only_new_rows_and_keeps_infinities():
    h = GradientHistory(["a b", "a:b", "a.b-c"])
    assert layer_tags(h.layers) == ["a_b", "a_b_2", "a.b-c"]
    grads = np.array([[1.0, np.inf, 2.0], [np.nan, 3.0, 4.0]])
    h.append([0, 1], {"grad_norm": grads}, {"loss": np.array([0.5, np.nan])})
    logdir = Path(__import__("tempfile").mkdtemp())
    with TensorBoardWriter(logdir) as board:
        assert board.write(h) == 2
        h.append([2], {"grad_norm": np.array([[5.0, 6.0, 7.0]])}, {"loss": np.array([0.25])})
        assert board.write(h) == 1 and board.write(h) == 0
        event_files = list(logdir.glob("events.out.tfevents.*"))
        assert event_files == [board.path]
    read = Board(logdir).scalars
    assert read["grad_norm/a_b"] == {0: 1.0, 2: 5.0}  # NaN at step 1: not written
    assert read["grad_norm/a_b_2"] == {0: np.inf, 1: 3.0, 2: 6.0}
    assert read["loss"] == {0: 0.5, 2: 0.25}
    assert set(read) == {"grad_norm/a_b", "grad_norm/a_b_2", "grad_norm/a.b-c", "loss"}


def test_plain_and_tensorflow_record_files_hold_the_same_bytes(tmp_path):
    import tensorflow  # noqa: F401 (its writer is used only where it is imported)

    files = {}
    for native in (False, True):
        path = tmp_path / f"events.out.tfevents.{native}"
        records = open_record_file(path, native=native)
        for payload in (b"", b"x" * 1000, bytes(range(256))):
            records.write(payload)
        records.close()
        files[native] = path.read_bytes()
    assert files[False] == files[True] and len(files[False]) == 3 * 16 + 1256
    with pytest.raises(FileExistsError):
        open_record_file(path, native=True)


def test_a_new_history_is_written_from_its_first_row(tmp_path):
    first, second = GradientHistory(["a"]), GradientHistory(["a"])
    first.append([0, 1], {"grad_norm": np.ones((2, 1))})
    second.append([0], {"grad_norm": np.full((1, 1), 2.0)})
    with TensorBoardWriter(tmp_path) as board:
        assert (board.write(first), board.write(second)) == (2, 1)


def test_export_of_a_comparison_gives_one_run_per_configuration(tmp_path, capsys):
    import json

    runs = {}
    for name, scale in (("tanh-glorot", 1.0), ("relu-he", 2.0)):
        h = GradientHistory(["h", "out"])
        h.append(range(3), {"grad_norm": np.full((3, 2), scale)}, {"loss": np.full(3, scale)})
        runs[name] = save_run(h, tmp_path / "cmp" / name, plots=False)
    meta = {"format": "gradscope-comparison", "runs": [{"label": n.replace("-", "/"), "folder": n} for n in runs]}
    (tmp_path / "cmp" / "comparison.json").write_text(json.dumps(meta))
    assert main(["report", str(tmp_path / "cmp"), "--no-plots", "--tensorboard", str(tmp_path / "tb")]) == 0
    for name, scale in (("tanh-glorot", 1.0), ("relu-he", 2.0)):
        board = Board(tmp_path / "tb", run=name)
        assert board.runs == ["relu-he", "tanh-glorot"]
        assert board.scalars["grad_norm/out"] == {0: scale, 1: scale, 2: scale}
        assert VERDICT_TAG in board.text


def test_monitor_refuses_a_folder_it_cannot_use_before_training(tmp_path):
    import keras

    from gradscope import GradientMonitor

    with pytest.raises(TypeError, match="tensorboard must be a folder path"):
        GradientMonitor(tensorboard=True)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = GradientMonitor(tensorboard=blocker / "tb")
    with pytest.raises(OSError):
        model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0, callbacks=[monitor])
    assert monitor.history is None or not len(monitor.history)  # no step was spent


class FullDisk(TensorBoardWriter):
    """A writer on a disk that is full."""

    def write(self, history: GradientHistory) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.slow  # trains
def test_a_write_that_fails_stops_the_files_not_training(tmp_path, capsys):
    import keras

    from gradscope import GradientMonitor

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = GradientMonitor(flush_every=2)
    monitor.tensorboard = FullDisk(tmp_path)
    model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2, verbose=0, callbacks=[monitor])
    assert len(monitor.history) == 4 and monitor.tensorboard is None
    err = capsys.readouterr().err
    assert err.count("TensorBoard files") == 1
    assert f"TensorBoard files in {tmp_path} are no longer written (the disk is full)" in err


def test_tensorboard_flags(tmp_path, capsys):
    parser = build_parser()
    for command in (["run"], ["compare"], ["report", "somewhere"]):
        assert parser.parse_args([*command, "--tensorboard", "logs/x"]).tensorboard == "logs/x"
        assert parser.parse_args(command).tensorboard is None
    h = GradientHistory(["a"])
    h.append([0], {"grad_norm": np.ones((1, 1))})
    run = save_run(h, tmp_path / "run", plots=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["report", str(run), "--no-plots", "--tensorboard", str(blocker / "tb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gradscope report: error: --tensorboard {blocker / 'tb'}: cannot make the folder")
    assert "\n" not in err


@pytest.mark.slow
def test_cli_run_writes_what_it_saves(tmp_path, capsys):
    out, logdir = tmp_path / "run", tmp_path / "tb"
    args = ["run", "--dataset", "digits", "--limit", "64", "--layers", "8", "--steps", "4", "--batch-size", "8",
            "--no-jit", "--quiet", "--out", str(out), "--tensorboard", str(logdir)]
    assert main(args) == 0
    assert f"TensorBoard files in {logdir}" in capsys.readouterr().out
    history = load_run(out)
    board = Board(logdir)
    assert_scalars_match(board, history)
    assert sorted(board.scalars["grad_norm/hidden_1"]) == [0, 1, 2, 3]
    assert VERDICT_TAG in board.text


@pytest.mark.slow
def test_export_needs_no_tensorflow(tmp_path):
    h = GradientHistory(["a"])
    h.append([0, 1], {"grad_norm": np.ones((2, 1))})
    run = save_run(h, tmp_path / "run", plots=False)
    code = (
        "import sys; sys.modules['tensorflow'] = None; from gradscope.cli import main; "
        "rc = main(['report', *sys.argv[1:]]); assert 'keras' not in sys.modules; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(run), "--no-plots", "--tensorboard", str(tmp_path / "tb")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert Board(tmp_path / "tb").scalars["grad_norm/a"] == {0: 1.0, 1: 1.0}
