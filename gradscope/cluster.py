"""Facts about the process and the strategy that need no TensorFlow: which
task of a multi-worker cluster this is, whether it is the chief (the one
that prints and writes), and the strategies gradscope refuses.

Kept apart from `gradscope.distributed` (the recording under
`tf.distribute`) so that the JAX backend's recording imports no TensorFlow.

Example:

>>> is_chief()
True
"""

from __future__ import annotations

import json
import os
from typing import Any

from gradscope.errors import DistributionError


def task() -> tuple[str | None, int]:
    """This process's task in a multi-worker cluster (``TF_CONFIG``): type and index."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        return None, 0
    entry = config.get("task") or {}
    cluster = config.get("cluster") or {}
    if not cluster or not entry:
        return None, 0
    kind = entry.get("type")
    # With no "chief" in the cluster, worker 0 is the chief (as in tf.distribute).
    if kind == "worker" and "chief" not in cluster and int(entry.get("index", 0)) == 0:
        kind = "chief"
    return kind, int(entry.get("index", 0))


def is_chief() -> bool:
    """True unless this process is a worker, other than the chief, of a
    multi-worker cluster: only the chief prints and writes files."""
    kind, _ = task()
    return kind in (None, "chief")


def check_strategy(strategy: Any) -> None:
    """Refuses the strategies gradscope cannot record under.

    Raises:
        DistributionError: for `TPUStrategy` (the step runs as one XLA
            program on the TPU, where the hooks' cross-replica row cannot be
            written) and `ParameterServerStrategy` (workers step
            asynchronously: there is no global step to record).
    """
    name = type(strategy).__name__
    if "TPUStrategy" in name:
        raise DistributionError(
            "gradscope cannot record under TPUStrategy: the step runs as one XLA program on the TPU; "
            "record a short run under MirroredStrategy on GPUs or CPU instead (docs/scaling.md)")
    if "ParameterServerStrategy" in name:
        raise DistributionError(
            "gradscope cannot record under ParameterServerStrategy: its workers step asynchronously, so "
            "there is no one global step to record; use MultiWorkerMirroredStrategy (docs/scaling.md)")
