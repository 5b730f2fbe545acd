"""Runs gradscope under tf.distribute in a fresh process, for tests/test_distribute.py.

Logical CPU devices and multi-worker strategies can only be set up before
TensorFlow initialises its devices, which the test process has long done.
So the tests start this script and read the JSON it prints on its last line:

    python tests/distribute_worker.py mirrored          # 2 logical CPU devices, one process
    python tests/distribute_worker.py worker OUT_DIR    # one worker of TF_CONFIG's cluster
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SERIES = ("grad_norm", "weight_norm", "update_ratio", "backprop", "act_mean", "act_std", "dead", "dact_mean",
          "saturation")


def data(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, n)]
    return x, y


def model():
    """The same weights in every process: built from one seed."""
    import keras

    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"),
                          keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    return m


def record(history) -> dict:
    """The history as plain lists (NaN as None), for JSON."""
    def plain(a):
        return np.where(np.isfinite(a), a, np.nan).astype(object).tolist() if a is not None else None

    out = {k: plain(np.asarray(history[k], dtype=float)) for k in SERIES}
    out["steps"] = history.steps.tolist()
    out["loss"] = plain(history.scalars["loss"])
    out["accuracy"] = plain(history.scalars["accuracy"])
    out["update_norm"] = plain(history.variable_series["update_norm"])
    out["variable_grad_norm"] = plain(history.variable_series["grad_norm"])
    hist = history.histograms.get("start")
    out["histogram"] = hist["counts"].sum(axis=1).tolist() if hist else None
    return out


def tape_step0(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Per-variable gradient norms of the global batch, from one GradientTape on one device."""
    import keras

    m = model()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, m(x, training=True)))
    return [float(tf.norm(g)) for g in tape.gradient(loss, m.trainable_variables)]


def mirrored() -> dict:
    import gradscope
    from gradscope.distributed import mirrored_on

    strategy, notice = mirrored_on(2)
    x, y = data()
    out = {"notice": notice, "replicas": strategy.num_replicas_in_sync, "tape": tape_step0(x[:16], y[:16])}
    single = gradscope.GradientMonitor()
    model().fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[single])
    out["single"] = record(single.history)
    with strategy.scope():
        m = model()
    monitor = gradscope.GradientMonitor()
    m.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[monitor])
    out["fit"] = record(monitor.history)
    out["fit_nonfinite"] = monitor.nonfinite is not None
    with strategy.scope():  # train (and below, fit) called inside the scope work too
        out["train"] = record(gradscope.train(model(), x, y, batch_size=16, shuffle=False))
    # One replica's share of the first batch holds a NaN: the other stays finite.
    bad = x.copy()
    bad[12, 0] = np.nan
    monitor = gradscope.GradientMonitor()
    with strategy.scope():
        model().fit(bad, y, batch_size=16, shuffle=False, verbose=0, callbacks=[monitor])
    out["bad"] = monitor.nonfinite.sentence() if monitor.nonfinite is not None else None
    return out


def worker(folder: str) -> dict:
    import gradscope

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data()
    with strategy.scope():
        m = model()
    monitor = gradscope.GradientMonitor(verbose=1)
    gradscope.train(m, x, y, batch_size=16, shuffle=False, callbacks=[monitor])
    saved = monitor.save(os.path.join(folder, f"run-{os.getpid()}"))
    return {"history": record(monitor.history), "saved": str(saved) if saved is not None else None,
            "replicas": strategy.num_replicas_in_sync}


if __name__ == "__main__":
    # Few threads: these runs are tiny, and a large pool only fights the other tests for the cores.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    result = mirrored() if sys.argv[1] == "mirrored" else worker(sys.argv[2])
    print(json.dumps(result))
