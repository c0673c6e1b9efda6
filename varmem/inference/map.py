"""``"map"``: gradient MAP of the log-joint ``log p(x, z | M)`` with Pyro.

The guide is ``AutoDelta`` (a point mass per cue, started at ``memory.init_latent``); the loss is
``Trace_ELBO()(model, guide)``, an ``ELBOModule`` whose value for a point-mass guide is exactly
``-log p(x, z | M)`` summed over cues; it is minimised with ``torch.optim``.  Parameters are
module-local, so nothing touches Pyro's global param store.  Kernel hyper-parameters stay fixed
(a learnable bandwidth collapses to zero under MAP: the prior density at a stored item is
unbounded as ``s → 0``).
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, init_to_value
from torch import Tensor
from tqdm.auto import tqdm

from ..retrieval import Retrieval
from ._options import choice, non_negative, positive_int

__all__ = ["retrieve_map"]


def retrieve_map(
    memory: Any,
    cue: Tensor,
    mask: Tensor | None,
    *,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    max_steps: int = 200,
    tol: float = 1e-9,
    init: str | Tensor = "cue",
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """MAP retrieval: ``argmax_z log p(x, z | M)`` by gradient steps on an ``AutoDelta`` guide.

    ``trace`` is ``[T]``, the loss ``Σ_b E(z_b; x_b)`` at every evaluation; ``converged`` is True
    for every cue when the stopping rule fired before ``max_steps``.

    Options:
        optimizer: ``"lbfgs"`` (default: the objective is deterministic, so a quasi-Newton
            method with a strong-Wolfe line search converges to the mode to high precision) or
            ``"adam"``.
        lr: learning rate (default 1 for L-BFGS, 0.01 for Adam, in data units per step).
        max_steps: most iterations.
        tol: stop when the relative loss change is below ``tol`` (and, for L-BFGS, when the
            largest gradient entry is below ``tol``).
        init: ``"cue"``, ``"posterior_mean"``, ``"prior_mean"`` or a ``[B, D]`` tensor.
        return_weights: keep the ``[B, N]`` responsibilities at the mode (None = if small).
        progress: show a progress bar.
    """
    choice(optimizer, "optimizer", ("lbfgs", "adam"))
    positive_int(max_steps, "max_steps")
    tol = non_negative(tol, "tol")
    lr = non_negative(lr if lr is not None else (1.0 if optimizer == "lbfgs" else 0.01), "lr")
    z0 = memory.init_latent(cue, mask, init).detach()
    site = memory.latent_site

    losses: list[float] = []
    with pyro.settings.context(module_local_params=True):
        guide = AutoDelta(memory.model, init_loc_fn=init_to_value(values={site: z0}))
        loss_fn = Trace_ELBO()(memory.model, guide)
        loss_fn(cue, mask)  # creates the guide's parameters (they are lazy)
        params = [p for p in guide.parameters() if p.requires_grad]

        def closure() -> Tensor:
            opt.zero_grad()
            loss = loss_fn(cue, mask)
            loss.backward()
            losses.append(loss.item())
            return loss

        bar = tqdm(total=max_steps, desc="map", disable=not progress, leave=False)
        converged = False
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(
                params, lr=lr, max_iter=max_steps, tolerance_grad=tol, tolerance_change=tol * 1e-3,
                history_size=20, line_search_fn="strong_wolfe",
            )
            opt.step(closure)
            steps = int(opt.state[params[0]]["n_iter"])
            converged = steps < max_steps
            bar.update(steps)
        else:
            opt = torch.optim.Adam(params, lr=lr)
            steps = 0
            for steps in range(1, max_steps + 1):  # noqa: B007
                opt.step(closure)
                bar.update(1)
                if len(losses) > 1 and abs(losses[-1] - losses[-2]) <= tol * (1 + abs(losses[-2])):
                    converged = True
                    break
        bar.close()
        with torch.no_grad():
            z = guide.median(cue, mask)[site].detach()

    weights = index = None
    if return_weights is not False and hasattr(memory, "item_log_weights"):
        with torch.no_grad():
            log_weights, index = memory.item_log_weights(z, return_weights)
        weights = None if log_weights is None else log_weights.exp()
    return Retrieval(
        pattern=memory.decode(z),
        method="map",
        code=z,
        weights=weights,
        index=index,
        trace=torch.tensor(losses, dtype=cue.dtype, device=cue.device),
        steps=steps,
        converged=torch.full((cue.shape[0],), converged, dtype=torch.bool, device=cue.device),
    )
