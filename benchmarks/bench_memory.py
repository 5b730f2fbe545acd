"""Peak resident memory of a long run against a short one, both streamed to a run folder.

A small deep model (50 Dense layers of 8 tanh units, batch 8, SGD, MSE on
random data) trains with ``GradientMonitor(stream_to=folder)`` (defaults:
every series, every step) for ``--short`` and then ``--long`` steps, each in
its own process, and the run folder is then saved (summary, plots). Each
process reports its peak resident set (``ru_maxrss``) after training and
after saving, the rows recorded and the bytes the history held in memory.
``fit`` runs with ``steps_per_execution=50`` and XLA, only to make 200,000
steps take minutes rather than half an hour; the recording is the same.

    python benchmarks/bench_memory.py                       # about 20 minutes
    python benchmarks/bench_memory.py --long 20000          # a smoke test
    python benchmarks/bench_memory.py --no-stream --long 20000   # the same, the record kept in memory

The last line gives the figure beside the target: the long run's peak at
most 50 MB above the short run's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

TARGET_MB = 50.0


def child(steps: int, args: argparse.Namespace, folder: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    from gradscope import GradientMonitor

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((args.width,))]
                             + [keras.layers.Dense(args.width, activation="tanh") for _ in range(args.layers)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=50, jit_compile=True)
    rng = np.random.default_rng(0)
    samples = args.batch * 1000  # 1,000 steps an epoch
    x = rng.random((samples, args.width), dtype=np.float32)
    y = rng.random((samples, args.width), dtype=np.float32)
    monitor = GradientMonitor(stream_to=None if args.no_stream else folder)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch, epochs=steps // 1000, verbose=0, callbacks=[monitor])
    trained = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.perf_counter() - start
    held = monitor.history.nbytes
    monitor.save(folder, overwrite=True)
    saved = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps": steps, "rows": len(monitor.history), "peak_trained_mb": trained, "peak_saved_mb": saved,
            "history_mb": held / 2**20, "seconds": seconds}


def run(steps: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--child", str(steps), "--folder", os.path.join(tmp, "run"),
                   "--layers", str(args.layers), "--width", str(args.width), "--batch", str(args.batch)]
        command += ["--no-stream"] if args.no_stream else []
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"the {steps}-step run failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=2_000, help="steps of the short run (default 2,000)")
    parser.add_argument("--long", type=int, default=200_000, help="steps of the long run (default 200,000)")
    parser.add_argument("--layers", type=int, default=50, help="Dense layers (default 50)")
    parser.add_argument("--width", type=int, default=8, help="units per layer (default 8)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--no-stream", action="store_true", help="keep the record in memory (no stream_to)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args, args.folder)))
        return
    for name in ("short", "long"):
        if getattr(args, name) < 1000 or getattr(args, name) % 1000:
            parser.error(f"--{name} must be a multiple of 1,000 (one epoch)")
    results = [run(args.short, args), run(args.long, args)]
    print(f"{'steps':>8} {'rows':>8} {'peak after fit MB':>18} {'peak after save MB':>19} "
          f"{'history in memory MB':>21} {'fit s':>7}")
    for r in results:
        print(f"{r['steps']:>8,} {r['rows']:>8,} {r['peak_trained_mb']:>18.1f} {r['peak_saved_mb']:>19.1f} "
              f"{r['history_mb']:>21.2f} {r['seconds']:>7.0f}")
    short, long = results
    growth = max(long["peak_saved_mb"], long["peak_trained_mb"]) - max(short["peak_saved_mb"],
                                                                         short["peak_trained_mb"])
    verdict = "met" if growth <= TARGET_MB else "NOT met"
    print(f"RESULT target: the {args.long:,}-step run's peak at most {TARGET_MB:.0f} MB above the "
          f"{args.short:,}-step run's; figure: {growth:+.1f} MB; {verdict}")


if __name__ == "__main__":
    main()
