"""The shared base of the binary (±1) memories: spins, the sign rule with ties, and the hooks of the
``"sync"`` / ``"async"`` / ``"fixed_point"`` engines (:class:`varmem.capabilities.SpinDynamics`).

Partial cues: observed entries (``mask``) are clamped to ``sign(cue)``; free entries start at 0 (no
evidence) and take ±1 at their first update.  Real-valued cues are read through their sign (0 → +1).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from ..capabilities import Step
from ..domains import SPIN
from ..helpers import start_state
from ..inference import retrieve_async, retrieve_fixed_point, retrieve_sync
from ..memory import Memory

__all__ = ["SpinMemory", "check_bipolar", "sign_with_ties"]


def sign_with_ties(x: Tensor, current: Tensor, tol: float = 0.0) -> Tensor:
    """``sign(x)``; where ``|x| ≤ tol`` (a tie) keep ``current`` (and +1 where that is 0 too)."""
    keep = torch.where(current == 0, torch.ones_like(current), current)
    return torch.where(x > tol, 1.0, torch.where(x < -tol, -1.0, keep)).to(current.dtype)


def check_bipolar(x: Tensor, name: str = "items") -> Tensor:
    """Raise ``ValueError`` unless every entry of ``x`` is exactly ±1."""
    if not (x.abs() == 1).all():
        raise ValueError(
            f"{name} must be bipolar: every entry exactly -1 or +1 (convert with varmem.normalize_patterns(x, 'sign'))"
        )
    return x


class SpinMemory(Memory):
    """Shared hooks of the binary (±1) memories, used by the ``"sync"``, ``"async"`` and ``"fixed_point"``
    engines (:class:`varmem.capabilities.SpinDynamics`).  Subclasses define ``compute_energy``,
    ``spin_cache``, ``preferred_spins`` and ``update_cache``.  No Pyro model: the Boltzmann
    distribution over ``2^D`` states is not tractable to normalise; reading is the sign dynamics."""

    methods = (retrieve_async, retrieve_sync, retrieve_fixed_point)
    default_method = "async"
    value_domain = SPIN

    def init_spins(self, cue: Tensor, mask: Tensor | None) -> Tensor:
        """``[B, D]`` start state: ``sign(cue)`` (0 → +1) on observed entries, 0 on free ones."""
        s = torch.where(cue >= 0, 1.0, -1.0).to(cue.dtype)
        return s if mask is None else torch.where(mask, s, torch.zeros((), dtype=s.dtype, device=s.device))

    @abstractmethod
    def spin_cache(self, s: Tensor) -> Tensor:
        """Fields that make one unit's update cheap (kept up to date by :meth:`update_cache`)."""

    @abstractmethod
    def preferred_spins(self, s: Tensor, cache: Tensor, units: Tensor | None = None) -> Tensor:
        """The energy-minimising value of each unit given all the others: ``[B, D]`` for ``units=None``,
        else ``[B]`` for one unit per cue (``units [B]``).  Ties keep the current value."""

    @abstractmethod
    def update_cache(self, cache: Tensor, units: Tensor, delta: Tensor) -> None:
        """In place: account for ``s[b, units[b]] += delta[b]``."""

    def clamped(self, z: Tensor, cue: Tensor | None, mask: Tensor | None) -> Tensor:
        """``z`` with the observed units of a partial cue set to the cue's signs (0 → +1)."""
        if cue is None or mask is None:
            return z
        return torch.where(mask, torch.where(cue >= 0, 1.0, -1.0).to(z.dtype), z)

    # --- hooks of the generic "fixed_point" engine (synchronous updates) ---------------------------
    def init_latent(self, cue: Tensor, mask: Tensor | None, init: str | Tensor) -> Tensor:
        start = start_state(init, cue, {"cue": lambda: self.init_spins(cue, mask)}, self)
        if not torch.is_tensor(init):
            return start
        s = self.init_spins(start, None)  # a given state: its signs, observed entries from the cue
        return s if mask is None else torch.where(mask, self.init_spins(cue, None), s)

    def fixed_point_step(
        self, z: Tensor, cue: Tensor, mask: Tensor | None, *, energy: bool = True, weights: bool = False,
        index: bool = False,
    ) -> Step:
        """One synchronous update (observed entries stay clamped), with ``E(z)`` when asked; weights and
        index where the memory defines them over its stored patterns."""
        new = self.preferred_spins(z, self.spin_cache(z))
        if mask is not None:
            new = torch.where(mask, z, new)
        w = top = None
        if (weights or index) and hasattr(self, "item_weights"):
            w, top = self.item_weights(z, None if weights else False)
        return Step(state=new, energy=self.compute_energy(z) if energy else None, weights=w, index=top)
