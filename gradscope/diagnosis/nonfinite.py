"""Where a run first went NaN or Inf: `first_nonfinite` traces it to a step, a layer and a variable."""

from __future__ import annotations

import numpy as np

from gradscope.diagnosis.findings import NonFinite
from gradscope.history import GradientHistory


def first_nonfinite(history: GradientHistory, loss_scaled: bool = False) -> NonFinite | None:
    """The first step where anything went NaN/Inf, traced to its layer.

    In the record, a norm is NaN where it was not measured and +inf where
    the tensor held NaN or Inf; weight norms are read after the step's
    update. Forward origins win: the first layer (in forward order) whose
    weights were non-finite before the step (non-finite after it, with a
    finite gradient) or whose outputs are non-finite is where the trouble
    started, since everything after it inherits it. Weights broken outside
    the optimizer on a step whose gradient they also broke show up as that
    layer's output. With finite activations, a non-finite loss comes next,
    then the gradients, searched from the output layer down (the direction
    back-propagation runs), then weights that this step's update made
    non-finite.

    Args:
        history: the record to search.
        loss_scaled: whether the run used loss scaling (mixed precision). Non-finite gradients alone are then the
            loss scaler's business (it skips the step), so they are not reported. Defaults to `False`.

    Returns:
        Where it happened, or None when every recorded value is finite.

    Example:

    >>> import numpy as np
    >>> from gradscope.history import GradientHistory
    >>> h = GradientHistory(["dense"], variables=["dense/kernel"])
    >>> h.append([0, 1], {"nonfinite": np.zeros((2, 1))}, {"loss": [1.0, 1.0]},
    ...          {"grad_norm": np.array([[1.0], [np.inf]]), "weight_norm": np.ones((2, 1))})
    >>> first_nonfinite(h).sentence()
    'non-finite values (NaN/Inf) first appeared at step 1 in the gradient of layer dense (kernel)'
    >>> first_nonfinite(h, loss_scaled=True) is None
    True
    """
    if not len(history):
        return None
    steps = history.steps
    n = len(steps)
    V = len(history.variables)

    def inf(name: str) -> np.ndarray:
        a = history.variable_series.get(name)
        return np.isinf(a).reshape(n, V) if a is not None else np.zeros((n, V), dtype=bool)

    share = history.get("nonfinite")
    # Share of non-finite outputs; NaN where the layer was not measured.
    act = np.nan_to_num(share, nan=0.0).reshape(n, -1) > 0 if share is not None else np.zeros((n, 0), bool)
    gbad = inf("grad_norm")
    after = inf("weight_norm")  # non-finite after the step's update
    # As the step used them: non-finite after this step's update although
    # its gradient was finite, so they were so before it. (Weights that an
    # update made non-finite are flagged at that update's own row, which
    # comes first.)
    used = after & ~gbad
    loss = history.scalars.get("loss")
    # A loss that is NaN on every row was never recorded, not broken.
    lbad = np.isinf(loss) | (np.isnan(loss) & ~np.all(np.isnan(loss))) if loss is not None else np.zeros(n, bool)
    nan_rows = act.any(1) | used.any(1) | lbad | after.any(1) | (gbad.any(1) & (not loss_scaled))
    if not nan_rows.any():
        return None
    r = int(np.argmax(nan_rows))
    step = int(steps[r])
    var_layer = [v.split("/", 1)[0] for v in history.variables]

    def layer_vars(layer: str, mask: np.ndarray) -> list[str]:
        return [v.split("/", 1)[1] for vi, v in enumerate(history.variables) if var_layer[vi] == layer and mask[r, vi]]

    # 1. Forward: the first layer (in forward order) whose weights, as the
    #    step used them, or whose output is non-finite. Everything after it
    #    inherits the trouble, and a ReLU can even hide it (relu(NaN) is 0
    #    on some kernels), so the weights are checked as well as the outputs.
    for li, layer in enumerate(history.layers):
        bad_w = layer_vars(layer, used)
        if bad_w:
            return NonFinite(step, layer, bad_w[0], "weights")
        if act.shape[1] > li and act[r, li]:
            bad = layer_vars(layer, gbad) or layer_vars(layer, after)
            return NonFinite(step, layer, bad[0] if bad else None, "activations")
    # 2. A finite forward pass with a non-finite loss: the loss itself.
    if lbad[r]:
        return NonFinite(step, None, None, "loss")
    # 3. Backward: the gradient nearest the output, where back-propagation starts.
    if not loss_scaled:
        for vi in range(V - 1, -1, -1):
            if gbad[r, vi]:
                layer, var = history.variables[vi].split("/", 1)
                return NonFinite(step, layer, var, "gradients")
    # 4. Weights this step's update made non-finite.
    for vi in range(V):
        if after[r, vi]:
            layer, var = history.variables[vi].split("/", 1)
            return NonFinite(step, layer, var, "weights")
    return NonFinite(step, None, None, "gradients")
