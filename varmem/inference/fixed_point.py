"""``"fixed_point"``: iterate a memory's fast update until the state stops moving (for the
kernel-density memory the mean-shift / modern-Hopfield step with the cue term, for a modern
Hopfield network its update)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..capabilities import FixedPointStep, ItemWeights
from ..engine import engine
from ..helpers import want_weights
from ..retrieval import Retrieval
from ..validation import check_bool, check_int, check_non_negative

__all__ = ["retrieve_fixed_point"]


@engine("fixed_point", requires=(FixedPointStep,))
def retrieve_fixed_point(
    memory: FixedPointStep,
    cue: Tensor,
    mask: Tensor | None,
    *,
    max_steps: int = 100,
    tol: float = 1e-6,
    init: str | Tensor = "cue",
    trace: bool = True,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Iterate ``z ← memory.fixed_point_step(z, cue, mask).state`` from ``memory.init_latent(init)``.

    A cue has converged when its largest coordinate change is ``≤ tol``; iteration stops when all
    have, or after ``max_steps`` updates.  Everything else is a by-product of the updates, so a
    read costs one pass over the stored items per update whatever the options:

    * ``trace`` ``[T, B]``: the energy ``E(z_t; x)`` at the state *before* each of the ``T`` updates
      (from the update's own log-sum-exp); for an EM step (the kernel-density memory) each column
      is non-increasing;
    * ``weights`` ``[B, N]``: the last update's weights over stored items, taken at the state
      before it (``weights_at = "last_update"``: hopfield-layers' association matrix; for a
      converged read the state barely moves, so they are also the weights at the result);
      with ``max_steps=0`` the responsibilities at the start (``"final_state"``);
    * ``index``: their arg-max (the item the last update pointed at), returned with the weights.

    Options:
        max_steps: most updates (``0`` returns the initial state).
        tol: convergence threshold on ``max_d |Δz_d|``.
        init: a start the memory knows (``"cue"`` always; ``"posterior_mean"``, ``"prior_mean"``
            ... where defined) or a ``[B, L]`` tensor.
        trace: record the energies.
        return_weights: keep the ``[B, N]`` weights and the ``index`` (None = if ``B·N`` is at most
            :data:`varmem.helpers.WEIGHTS_LIMIT`).
        progress: show a progress bar.
    """
    check_int(max_steps, "option max_steps", minimum=0)
    tol = check_non_negative(tol, "option tol")
    check_bool(trace, "option trace")
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    has_items = isinstance(memory, ItemWeights)
    if return_weights and not has_items:
        raise ValueError(f"{type(memory).__name__} has no weights over stored items (use return_weights=None/False)")
    dense = index = has_items and want_weights(return_weights, cue.shape[0], len(memory))
    z = memory.init_latent(cue, mask, init)
    energies: list[Tensor] = []
    converged = torch.zeros(cue.shape[0], dtype=torch.bool, device=cue.device)
    steps, last = 0, None
    bar = tqdm(total=max_steps, desc="fixed point", leave=False) if progress else None
    with torch.no_grad():
        while steps < max_steps:
            step = memory.fixed_point_step(z, cue, mask, energy=trace, weights=dense, index=index)
            if trace:
                energies.append(step.energy)
            converged = (step.state - z).abs().amax(-1) <= tol
            z, last = step.state, step
            steps += 1
            if bar is not None:
                bar.update()
            if steps < max_steps and bool(converged.all()):
                break
        if bar is not None:
            bar.close()
        weights, at, top = (last.weights, "last_update", last.index) if last is not None else (None, None, None)
        if last is None and index:
            weights, top = memory.item_weights(z, return_weights if dense else False)
            at = "final_state"
    stacked = torch.stack(energies) if energies else cue.new_zeros(0, cue.shape[0])
    return Retrieval(
        pattern=memory.decode(z),
        method="fixed_point",
        code=z,
        weights=weights if dense else None,
        weights_at=at,
        index=top if index else None,
        trace=stacked if trace else None,
        steps=steps,
        converged=converged,
    )

