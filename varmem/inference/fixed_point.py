"""``"fixed_point"``: iterate a memory's fast update (for the kernel-density memory, the
mean-shift / modern-Hopfield step with the cue term) until the state stops moving."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..retrieval import Retrieval
from ._options import non_negative, positive_int

__all__ = ["retrieve_fixed_point"]


def retrieve_fixed_point(
    memory: Any,
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
    """Iterate ``z ← memory.fixed_point_step(z, cue, mask)`` from ``memory.init_latent(init)``.

    With ``trace=False`` the optional hook ``memory.fixed_point_update(z, cue, mask)`` (the same
    step without its energy) is used when the memory has one.

    A cue has converged when its largest coordinate change is ``≤ tol``; iteration stops when all
    have, or after ``max_steps`` updates.  ``trace`` is ``[T + 1, B]``: the energy
    ``E(z_t; x)`` before each step and at the end (for the kernel-density memory every step is an
    EM step, so each column is non-increasing).  ``weights`` are the responsibilities
    ``p(i | z*, M)`` at the final state.

    Options:
        max_steps: most updates (``0`` returns the initial state).
        tol: convergence threshold on ``max_d |Δz_d|``.
        init: ``"cue"``, ``"posterior_mean"``, ``"prior_mean"`` or a ``[B, D]`` tensor.
        trace: record energies (costs one extra pass over the items at the end); with
            ``trace=False`` and ``return_weights=False`` every step is exactly one pass and no
            energy is computed.
        return_weights: keep the ``[B, N]`` responsibilities (None = if ``B·N ≤ 2**24``).
        progress: show a progress bar.
    """
    positive_int(max_steps, "max_steps", allow_zero=True)
    tol = non_negative(tol, "tol")
    z = memory.init_latent(cue, mask, init)
    energies: list[Tensor] = []
    update = None if trace else getattr(memory, "fixed_point_update", None)
    converged = torch.zeros(cue.shape[0], dtype=torch.bool, device=cue.device)
    steps = 0
    bar = tqdm(total=max_steps, desc="fixed point", leave=False) if progress else None
    with torch.no_grad():
        while steps < max_steps:
            if update is None:
                z_new, energy = memory.fixed_point_step(z, cue, mask)
                if trace:
                    energies.append(energy)
            else:
                z_new = update(z, cue, mask)
            converged = (z_new - z).abs().amax(-1) <= tol
            z = z_new
            steps += 1
            if bar is not None:
                bar.update()
            if steps < max_steps and bool(converged.all()):
                break
        if bar is not None:
            bar.close()
        weights = index = None
        if trace:
            energies.append(memory.energy(z, cue, mask))
        if return_weights is not False:
            log_weights, index = memory.item_log_weights(z, return_weights)
            weights = None if log_weights is None else log_weights.exp()
    return Retrieval(
        pattern=memory.decode(z),
        method="fixed_point",
        code=z,
        weights=weights,
        index=index,
        trace=torch.stack(energies) if trace and energies else None,
        steps=steps,
        converged=converged,
    )
