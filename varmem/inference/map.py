"""``"map"``: gradient MAP of the log-joint ``log p(x, z | M)`` with Pyro.

The guide is ``AutoDelta`` (a point mass per cue, started at ``memory.init_latent``).  The loss is
the ``Trace_ELBO`` of that guide, ``-log p(x, z | M)`` summed over cues, computed as Pyro computes
it (the guide traced, the model replayed against it, the sites' log-densities) but kept per cue,
so the trace is the energy of every cue at every evaluation; it is minimised with ``torch.optim``.
Parameters are module-local, so nothing touches Pyro's global param store.  Kernel
hyper-parameters stay fixed (a learnable bandwidth collapses to zero under MAP: the prior density
at a stored item is unbounded as ``s → 0``).
"""

from __future__ import annotations

from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoDelta, init_to_value
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor
from tqdm.auto import tqdm

from ..capabilities import ItemWeights, PyroModel
from ..engine import engine
from ..retrieval import Retrieval
from ..validation import DIVERGED, check_bool, check_choice, check_non_negative, check_positive_int, in_range

__all__ = ["retrieve_map", "per_cue_loss"]


def per_cue_loss(model: Callable, guide: Callable, args: tuple, batch: int) -> tuple[Tensor, Tensor]:
    """``(loss, energies [batch])``: the single-particle ``Trace_ELBO`` loss of ``guide`` for
    ``model(*args)`` and its per-cue terms (sites whose log-density has shape ``[batch]``, i.e.
    under the cue plate; sites outside it count in ``loss`` only)."""
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    loss = 0.0
    energies = None
    for trace, sign in ((model_trace, -1.0), (guide_trace, 1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            log_p = site["log_prob"]
            loss = loss + sign * log_p.sum()
            if log_p.shape == (batch,):
                energies = sign * log_p if energies is None else energies + sign * log_p
    if energies is None:
        energies = torch.zeros(batch)
    return loss, energies


@engine("map", requires=(PyroModel,))
def retrieve_map(
    memory: PyroModel,
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

    ``trace`` is ``[T, B]``: ``E(z_b; x_b) = -log p(x_b, z_b | M)`` of every cue at each of the
    ``T`` loss evaluations (L-BFGS evaluates inside its line search too); ``converged`` is True for
    every cue when the stopping rule fired before ``max_steps``; ``weights`` are the
    responsibilities at the mode (``weights_at = "final_state"``) for memories with item weights.

    Options:
        optimizer: ``"lbfgs"`` (default: the objective is deterministic, so a quasi-Newton
            method with a strong-Wolfe line search converges to the mode to high precision) or
            ``"adam"``.
        lr: learning rate (default 1 for L-BFGS, 0.01 for Adam, in data units per step).
        max_steps: most iterations.
        tol: stop when the relative loss change is below ``tol`` (and, for L-BFGS, when the
            largest gradient entry is below ``tol``).
        init: ``"cue"``, ``"prior_mean"`` (and others the memory defines) or a ``[B, L]`` tensor.
        return_weights: keep the ``[B, N]`` responsibilities at the mode (None = if small).
        progress: show a progress bar.
    """
    check_choice(optimizer, "option optimizer", ("lbfgs", "adam"))
    check_positive_int(max_steps, "option max_steps")
    tol = check_non_negative(tol, "option tol")
    lr = check_non_negative(lr if lr is not None else (1.0 if optimizer == "lbfgs" else 0.01), "option lr")
    if lr == 0 and optimizer == "lbfgs":  # torch's strong-Wolfe line search divides by the step length
        raise ValueError("option lr must be > 0 with optimizer 'lbfgs' (a zero step cannot be line-searched)")
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    z0 = memory.init_latent(cue, mask, init).detach()
    site, B = memory.latent_site, cue.shape[0]

    losses: list[float] = []
    energies: list[Tensor] = []
    with pyro.settings.context(module_local_params=True):
        guide = AutoDelta(memory.model, init_loc_fn=init_to_value(values={site: z0}))
        guide(cue, mask)  # creates the guide's parameters (they are lazy)
        params = [p for p in guide.parameters() if p.requires_grad]

        def closure() -> Tensor:
            opt.zero_grad()
            if not all(in_range(p.detach(), DIVERGED) for p in params):  # before the model overflows
                raise FloatingPointError(
                    f"map diverged (the state went beyond ±{DIVERGED:g}): lower option lr (now {lr}), or check the "
                    f"memory's settings {memory.config()}")
            loss, per_cue = per_cue_loss(memory.model, guide, (cue, mask), B)
            loss.backward()
            losses.append(loss.item())
            energies.append(per_cue.detach())
            return loss

        bar = tqdm(total=max_steps, desc="map", disable=not progress, leave=False)
        converged = False
        if optimizer == "lbfgs":
            opt: Any = torch.optim.LBFGS(
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
    if return_weights is not False and isinstance(memory, ItemWeights):
        with torch.no_grad():
            weights, index = memory.item_weights(z, return_weights)
    return Retrieval(
        pattern=memory.decode(z),
        method="map",
        code=z,
        weights=weights,
        weights_at="final_state",
        index=index,
        trace=torch.stack(energies).to(cue),
        steps=steps,
        converged=torch.full((B,), converged, dtype=torch.bool, device=cue.device),
    )

