"""``"sync"`` and ``"async"``: sign (spin-flip) dynamics of the binary memories.

Both use the :class:`varmem.capabilities.SpinDynamics` hooks: ``init_spins(cue, mask)``,
``spin_cache(s)`` (local fields or overlaps), ``preferred_spins(s, cache, units)`` (the value of
lower energy given the other units; ties keep the current value), ``update_cache(cache, units,
delta)`` and ``compute_energy(s)``; weights over stored items where the memory has them
(:class:`varmem.capabilities.ItemWeights`).

* ``"sync"``: every free unit updated at once from the same state.  No Lyapunov guarantee: for a
  symmetric ``W`` the dynamics end in a fixed point or a 2-cycle (Goles et al. 1985); a cue stops
  when it is at either, and ``info["two_cycle"]`` marks the latter.
* ``"async"``: one unit at a time in a random order (a fresh permutation per sweep and per cue, from a
  ``torch.Generator`` seeded by ``seed``; vectorised over the batch: at each of the ``D`` sub-steps every
  cue updates its own next unit).  Each update picks the lower-energy value, so ``E`` never increases;
  a cue has converged after a sweep without a flip (a fixed point of the dynamics).

Clamped (observed) units of a partial cue are never changed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..capabilities import ItemWeights, SpinDynamics
from ..engine import engine
from ..retrieval import Retrieval
from ..validation import check_bool, check_int, check_seed

__all__ = ["retrieve_sync", "retrieve_async"]


def _finish(memory: Any, s: Tensor, method: str, energies: list[Tensor], steps: int, converged: Tensor,
            return_weights: bool | None, info: dict[str, Any]) -> Retrieval:
    weights = index = None
    if isinstance(memory, ItemWeights) and return_weights is not False:
        weights, index = memory.item_weights(s, return_weights)
    elif return_weights:
        raise ValueError(f"{type(memory).__name__} has no weights over stored items (use return_weights=None/False)")
    return Retrieval(
        pattern=s,
        method=method,
        weights=weights,
        weights_at="final_state",
        index=index,
        trace=torch.stack(energies) if energies else None,
        steps=steps,
        converged=converged,
        info=info,
    )


@engine("sync", requires=(SpinDynamics,))
def retrieve_sync(
    memory: SpinDynamics,
    cue: Tensor,
    mask: Tensor | None,
    *,
    max_steps: int = 100,
    trace: bool = True,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Synchronous sign dynamics ``s ← argmin-energy value of every unit`` from ``init_spins``.

    ``trace`` is ``[T + 1, B]``, the energy before the first and after every update.  ``steps`` counts
    the updates made; ``converged`` marks cues at a fixed point, ``info["two_cycle"]`` those in a 2-cycle;
    ``weights`` are taken at the final state.

    Options:
        max_steps: most synchronous updates.
        trace: record the energies.
        return_weights: keep weights over stored items where the memory defines them.
        progress: show a progress bar.
    """
    check_int(max_steps, "option max_steps", minimum=0)
    check_bool(trace, "option trace")
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    with torch.no_grad():
        s = memory.init_spins(cue, mask)
        energies = [memory.compute_energy(s)] if trace else []
        fixed = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)
        cycle = torch.zeros_like(fixed)
        previous, steps = None, 0
        for steps in tqdm(range(1, max_steps + 1), desc="sync", disable=not progress, leave=False):  # noqa: B007
            new = memory.preferred_spins(s, memory.spin_cache(s))
            if mask is not None:
                new = torch.where(mask, s, new)
            fixed = (new == s).all(-1)
            cycle = ~fixed & (previous == new).all(-1) if previous is not None else cycle
            previous, s = s, new
            if trace:
                energies.append(memory.compute_energy(s))
            if bool((fixed | cycle).all()):
                break
    return _finish(memory, s, "sync", energies, steps, fixed, return_weights, {"two_cycle": cycle})


@engine("async", requires=(SpinDynamics,))
def retrieve_async(
    memory: SpinDynamics,
    cue: Tensor,
    mask: Tensor | None,
    *,
    max_steps: int = 100,
    seed: int = 0,
    trace: bool | str = True,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Asynchronous sign dynamics in a seeded random order (see the module docstring).

    One step is one sweep (every unit of every cue visited once).  ``trace`` ``[T + 1, B]``: the
    energy at the start and after every sweep; ``converged``: no unit flipped in the last sweep;
    ``weights`` are taken at the final state.

    Options:
        max_steps: most sweeps.
        seed: seed of the ``torch.Generator`` that draws the update orders (same seed, same result).
        trace: True (energy per sweep), ``"unit"`` (after every single-unit update, ``[T·D + 1, B]``;
            costs a full energy per unit, for tests) or False.
        return_weights: keep weights over stored items where the memory defines them.
        progress: show a progress bar.
    """
    check_int(max_steps, "option max_steps", minimum=0)
    seed = check_seed(seed, "option seed")
    if isinstance(trace, str):
        if trace != "unit":
            raise ValueError(f"option trace must be True, False or 'unit', got {trace!r}")
    else:  # a bool (numpy's too, as a Python bool: the loop tests `trace is True`)
        trace = check_bool(trace, "option trace (True, False or 'unit')")
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    generator = torch.Generator(device=cue.device).manual_seed(seed)
    with torch.no_grad():
        s = memory.init_spins(cue, mask)
        B, D = s.shape
        rows = torch.arange(B, device=s.device)
        free = torch.ones_like(s, dtype=torch.bool) if mask is None else ~mask.expand_as(s)
        cache = memory.spin_cache(s)
        energies = [memory.compute_energy(s)] if trace else []
        flipped = torch.ones(B, dtype=torch.bool, device=s.device)
        sweeps = 0
        for sweeps in tqdm(range(1, max_steps + 1), desc="async", disable=not progress, leave=False):  # noqa: B007
            # float64 draws: the same seed gives the same order whatever the memory's dtype
            order = torch.rand(B, D, generator=generator, device=s.device, dtype=torch.float64).argsort(-1)
            flipped = torch.zeros(B, dtype=torch.bool, device=s.device)
            if sweeps > 1:
                cache = memory.spin_cache(s)  # refresh: no rounding drift across sweeps
            for t in range(D):  # the D sub-steps of a sweep; each is vectorised over the batch
                units = order[:, t]
                old = s[rows, units]
                new = torch.where(free[rows, units], memory.preferred_spins(s, cache, units), old)
                delta = new - old
                s[rows, units] = new
                memory.update_cache(cache, units, delta)
                flipped |= delta != 0
                if trace == "unit":
                    energies.append(memory.compute_energy(s))
            if trace is True:
                energies.append(memory.compute_energy(s))
            if not bool(flipped.any()):
                break
    return _finish(memory, s, "async", energies, sweeps, ~flipped, return_weights, {"seed": seed})
